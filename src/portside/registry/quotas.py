"""Quotas per namespace (`policies.quotas`): bytes stored, each blob counted once however many
of the namespace's repositories hold it, and optionally repositories and tags.

Usage is what metadata links: a blob counts once it is stored and linked, never while it is
uploaded, so an upload refused or abandoned leaves nothing counted; a deleted image's blobs
stop counting when garbage collection takes their links away. A push is refused as early as
its size is known: a monolithic upload's length, each chunk's end (the upload's bytes so far
and this chunk), the finished blob, a mount; and always at the manifest PUT, which also counts
repositories and tags.

Reading the usage costs a scan of the namespace's links, so a process reckons instead while a
namespace is far from its limits: with the usage it read at most RECKON_SECONDS ago, plus what it
let through since (bytes, and one repository and one tag per manifest, as if each were new). A
push that, so reckoned, would take the namespace past half of a limit has the usage read again,
exactly, and the limit checked as it stands (a blob the namespace holds already, a manifest or
tag that is there, adds nothing). So only pushes through other processes (workers, instances)
adding over half of a quota within a second can take a namespace past it unseen. Checks read and
then the push writes: pushes racing each other at the very edge of a quota may both pass,
overshooting it by what they add.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from portside.auth.permissions import compile_pattern
from portside.config.policies import QuotaRule, label
from portside.metadata.base import Footprint, PolicyStore, RequestStore
from portside.registry.errors import PolicyDenied

RECKON_SECONDS: Final = 1.0
NAMESPACES_KEPT: Final = 10_000


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


class Quotas:
    def __init__(
        self,
        rules: Sequence[QuotaRule],
        metadata: QuotaStore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rules: tuple[tuple[re.Pattern[str], ...], ...] = tuple(
            tuple(compile_pattern(p) for p in rule.namespaces) for rule in rules
        )
        self._quotas = tuple(
            Quota(label(rule, "quotas", index), rule) for index, rule in enumerate(rules)
        )
        self._metadata = metadata
        self._clock = clock
        self._found: dict[str, Quota | None] = {}
        self._reckonings: dict[str, _Reckoning] = {}

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
        reckoned = self._reckoning(namespace)
        if reckoned is not None and reckoned.bytes + size <= limit / 2:
            self._let_through(namespace, size, 0)
            return
        if digest is not None and await self._metadata.namespace_holds(namespace, digest):
            return
        used = (await self._read(namespace)).bytes
        if used + size > limit:
            raise _refusal(namespace, quota, "bytes", used, limit, size)
        self._let_through(namespace, size, 0)

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
        rule = quota.rule
        reckoned = self._reckoning(namespace)
        if reckoned is None or not reckoned.far_from(rule, size):
            await self._check_manifest(namespace, quota, repository, digest, size, tag)
        self._let_through(namespace, size, 1)

    async def _check_manifest(
        self, namespace: str, quota: Quota, repository: str, digest: str, size: int, tag: str | None
    ) -> None:
        rule, metadata = quota.rule, self._metadata
        footprint = await self._read(namespace)
        used = footprint.bytes
        # Each limit's cheap test first: the lookups behind `and` run only at the limit.
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

    def _reckoning(self, namespace: str) -> _Reckoning | None:
        """This process's reckoning of the namespace's usage, if read recently enough."""
        found = self._reckonings.get(namespace)
        if found is None or self._clock() - found.read_at >= RECKON_SECONDS:
            return None
        return found

    async def _read(self, namespace: str) -> Footprint:
        footprint = await self._metadata.namespace_footprint(namespace)
        if len(self._reckonings) > NAMESPACES_KEPT:
            self._reckonings.clear()
        self._reckonings[namespace] = _Reckoning(self._clock(), footprint)
        return footprint

    def _let_through(self, namespace: str, size: int, manifests: int) -> None:
        found = self._reckonings.get(namespace)
        if found is not None:
            added = found.added_bytes + size, found.added_manifests + manifests
            self._reckonings[namespace] = replace(
                found, added_bytes=added[0], added_manifests=added[1]
            )


@dataclass(frozen=True, slots=True)
class _Reckoning:
    """A namespace's usage as read at read_at, and what this process let through since."""

    read_at: float
    footprint: Footprint
    added_bytes: int = 0
    added_manifests: int = 0  # each counted as a new repository and a new tag

    @property
    def bytes(self) -> int:
        return self.footprint.bytes + self.added_bytes

    def far_from(self, rule: QuotaRule, size: int) -> bool:
        """Whether the manifest's push, reckoned as adding size bytes, a repository and a tag,
        stays within half of every limit."""
        return all(
            limit is None or used <= limit / 2
            for used, limit in (
                (self.bytes + size, rule.max_bytes),
                (self.footprint.repositories + self.added_manifests + 1, rule.max_repositories),
                (self.footprint.tags + self.added_manifests + 1, rule.max_tags),
            )
        )


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
