"""Quotas per namespace (`policies.quotas`): bytes stored, each blob counted once however many
of the namespace's repositories hold it, and optionally repositories and tags.

Usage is what metadata links: a blob counts once it is stored and linked, never while it is
uploaded, so an upload refused or abandoned leaves nothing counted; a deleted image's blobs
stop counting when garbage collection takes their links away. A push is refused as early as
its size is known: a monolithic upload's length, each chunk's end (the upload's bytes so far
and this chunk), the finished blob, a mount; and always at the manifest PUT, which also counts
repositories and tags. Checks read the usage and then write: two pushes racing each other at
the edge of a quota may both pass, overshooting it by what they add.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from portside.auth.permissions import compile_pattern
from portside.config.policies import QuotaRule, label
from portside.metadata.base import Footprint, PolicyStore, RequestStore
from portside.registry.errors import PolicyDenied


class QuotaStore(PolicyStore, RequestStore, Protocol):
    """Usage by namespace, and whether a manifest or tag is there already."""


def namespace_of(repository: str) -> str:
    """The first component of a repository name; "" for a name of one component."""
    head, slash, _ = repository.partition("/")
    return head if slash else ""


@dataclass(frozen=True, slots=True)
class Quota:
    label: str
    rule: QuotaRule


@dataclass(frozen=True, slots=True)
class Usage:
    namespace: str
    footprint: Footprint
    quota: Quota | None


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
            if len(self._found) > 10_000:
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

    async def usage(self, namespace: str) -> Usage:
        footprint = await self._metadata.namespace_footprint(namespace)
        return Usage(namespace, footprint, self.quota_of(namespace))

    async def check_blob(self, repository: str, size: int, digest: str | None = None) -> None:
        """DENIED if storing `size` more bytes in the repository's namespace would exceed its
        quota; a blob (by digest) the namespace holds already adds nothing."""
        namespace = namespace_of(repository)
        quota = self.quota_of(namespace)
        if quota is None or quota.rule.max_bytes is None:
            return
        if digest is not None and await self._metadata.namespace_holds(namespace, digest):
            return
        used = (await self._metadata.namespace_footprint(namespace)).bytes
        if used + size > quota.rule.max_bytes:
            raise _refusal(namespace, quota, "bytes", used, quota.rule.max_bytes, size)

    async def check_manifest(
        self, repository: str, digest: str, size: int, tag: str | None
    ) -> None:
        """DENIED if the manifest's push would take the namespace past a limit: its bytes with
        the blobs the push linked (unless the manifest is there already, a push adding nothing),
        a new repository, a new tag."""
        namespace = namespace_of(repository)
        quota = self.quota_of(namespace)
        if quota is None:
            return
        rule, metadata = quota.rule, self._metadata
        footprint = await metadata.namespace_footprint(namespace)
        used = footprint.bytes
        # Each limit's cheap test first: the lookups behind `and` run only near the limit.
        if (
            rule.max_bytes is not None
            and used > rule.max_bytes - size
            and await metadata.get_manifest(repository, digest) is None
        ):
            added = 0 if await metadata.namespace_holds(namespace, digest) else size
            if used + added > rule.max_bytes:
                raise _refusal(namespace, quota, "bytes", used, rule.max_bytes, added)
        repositories = footprint.repositories
        if (
            rule.max_repositories is not None
            and repositories >= rule.max_repositories
            and not await metadata.holds_manifests(repository)
        ):
            limit = rule.max_repositories
            raise _refusal(namespace, quota, "repositories", repositories, limit, 1)
        if (
            rule.max_tags is not None
            and tag is not None
            and footprint.tags >= rule.max_tags
            and await metadata.get_manifest(repository, tag) is None
        ):
            raise _refusal(namespace, quota, "tags", footprint.tags, rule.max_tags, 1)


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
