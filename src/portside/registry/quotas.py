"""Quotas per namespace (`policies.quotas`): bytes stored, each blob counted once however many
of the namespace's repositories hold it, and optionally repositories and tags.

Usage is what metadata links: a blob counts once it is stored and linked, never while it is
uploaded, so an upload refused or abandoned leaves nothing counted; a deleted image's blobs
stop counting when garbage collection takes their links away. The metadata store keeps each
namespace's usage as counters that every write of links, manifests and tags updates (0013), so
reading it costs one row, whatever the namespace's size.

A push is refused as early as its size is known: a monolithic upload's length, each chunk's end
(the upload's bytes so far and this chunk), the finished blob, a mount (a blob the namespace holds
already adds nothing). Those checks read the usage, then the push writes: blob pushes racing at
the very edge of a quota may both pass. The manifest PUT is checked always, and exactly: in the
transaction that records the manifest, with the namespace's usage locked (put_manifest's
`limits`), it is refused if it adds to a usage (bytes, repositories, tags) that it would leave
over a limit. Pushes through any worker or instance are checked one after the other, so an image
is stored only while its namespace stays within its quota, whatever runs at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from portside.auth.permissions import compile_pattern
from portside.config.policies import QuotaRule, label
from portside.metadata.base import NamespaceLimits, OverQuota, PolicyStore
from portside.registry.errors import PolicyDenied

NAMESPACES_KEPT: Final = 10_000


class QuotaStore(PolicyStore, Protocol):
    """Usage by namespace."""


def namespace_of(repository: str) -> str:
    """The first component of a repository name; "" for a name of one component (the same in
    SQL: migration 0013's NAMESPACE)."""
    head, slash, _ = repository.partition("/")
    return head if slash else ""


@dataclass(frozen=True, slots=True)
class Quota:
    label: str
    rule: QuotaRule


class Quotas:
    def __init__(self, rules: Sequence[QuotaRule], metadata: QuotaStore) -> None:
        self._rules: tuple[tuple[re.Pattern[str], ...], ...] = tuple(
            tuple(compile_pattern(p) for p in rule.namespaces) for rule in rules
        )
        self._quotas = tuple(
            Quota(label(rule, "quotas", index), rule) for index, rule in enumerate(rules)
        )
        self._metadata = metadata
        self._found: dict[str, Quota | None] = {}

    def __bool__(self) -> bool:
        return bool(self._quotas)

    def quota_of(self, namespace: str) -> Quota | None:
        """The first rule naming the namespace."""
        if namespace not in self._found:
            if len(self._found) > NAMESPACES_KEPT:
                self._found.clear()
            self._found[namespace] = next(
                (
                    quota
                    for quota, patterns in zip(self._quotas, self._rules, strict=True)
                    if any(pattern.fullmatch(namespace) for pattern in patterns)
                ),
                None,
            )
        return self._found[namespace]

    async def check_blob(self, repository: str, size: int, digest: str | None = None) -> None:
        """DENIED if storing `size` more bytes in the repository's namespace would exceed its
        quota; a blob (by digest) the namespace holds already adds nothing."""
        namespace = namespace_of(repository)
        quota = self.quota_of(namespace)
        if quota is None or quota.rule.max_bytes is None:
            return
        limit = quota.rule.max_bytes
        used = (await self._metadata.namespace_footprint(namespace)).bytes
        if used + size <= limit:
            return
        if digest is not None and await self._metadata.namespace_holds(namespace, digest):
            return
        raise _refusal(namespace, quota, "bytes", used, limit, size)

    def limits(self, repository: str) -> NamespaceLimits | None:
        """What put_manifest checks of the repository's namespace, if it has a quota."""
        namespace = namespace_of(repository)
        quota = self.quota_of(namespace)
        if quota is None:
            return None
        rule = quota.rule
        return NamespaceLimits(namespace, rule.max_bytes, rule.max_repositories, rule.max_tags)

    def refusal(self, over: OverQuota) -> PolicyDenied:
        """DENIED for a manifest put_manifest refused, with its namespace's usage and limit."""
        quota = self.quota_of(over.namespace)
        assert quota is not None  # limits() gave the limits it went over
        return _refusal(over.namespace, quota, over.what, over.used, over.limit, over.adding)


def _refusal(
    namespace: str, quota: Quota, what: str, used: int, limit: int, adding: int
) -> PolicyDenied:
    shown = namespace or '"" (repositories of one component)'
    reason = (
        f"quota exceeded for namespace {shown} (rule {quota.label}): {used:,} of {limit:,} "
        f"{what} used, this push needs {adding:,} more"
    )
    detail = {
        "namespace": namespace,
        "rule": quota.label,
        "limit": what,
        "used": used,
        "max": limit,
        "requested": adding,
    }
    return PolicyDenied(reason, detail)
