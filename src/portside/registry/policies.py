"""The policies the registry enforces where tags move and blobs are linked, built once from
`policies` in the settings: immutable tags, quotas, and the pull times retention reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from portside.config.policies import PoliciesSettings
from portside.registry.immutability import ImmutableTags
from portside.registry.pull_times import PullTimes
from portside.registry.quotas import Quotas, QuotaStore


@dataclass(frozen=True)
class Policies:
    immutable: ImmutableTags = field(default_factory=ImmutableTags)
    quotas: Quotas | None = None  # None: no quota
    pull_times: PullTimes | None = None  # None: pulls are not timed

    @classmethod
    def build(cls, settings: PoliciesSettings, metadata: QuotaStore) -> Policies:
        return cls(
            ImmutableTags(settings.immutable_tags),
            Quotas(settings.quotas, metadata) if settings.quotas else None,
            PullTimes(metadata),
        )
