"""Garbage collection, online: what is garbage, and how it goes while pushes go on.

What is garbage, at a run that starts at `now`, with `cutoff = now - gc_grace_period` and
`expiry = now - upload_expiry`:

1. Manifests, with `gc_untagged: collect` only (the default, `keep`, collects none: a manifest
   goes when a client deletes it by digest). Kept are the tagged manifests, those created after
   cutoff, the children of a kept index, and the referrers of a kept manifest (a manifest whose
   `subject` is kept: referrers follow their subject); every other manifest is garbage, with
   its references and the link of its own digest.
2. Tags naming no manifest (none are made any more; older versions could leave some).
3. Blob links: a repository's link to a digest that no manifest of the repository references,
   that is no manifest of the repository, and that was made before cutoff. So a blob pushed but
   never referenced (a crashed push) goes after the grace period, and so do the layers of a
   deleted manifest, whatever their age, once nothing else there references them.
4. Blobs: a record linked nowhere, referenced by no manifest, not reserved by a writer (below)
   and recorded before cutoff goes, with its bytes. So does a record a writer left `pending`
   when it died, once its reservation has expired.
5. Bytes under blobs/ with no record, written before cutoff: a crash between storing and
   recording, or a record lost in an older version.
6. Upload sessions not updated since expiry, with their objects; objects under uploads/ that
   belong to no session and were written before expiry (whole blobs of requests that died,
   single POST uploads having no session; bytes a chunk wrote to a session ended meanwhile);
   reservations made before expiry (their writers died).

Why a push never loses a blob it references, whatever the interleaving:

- Writers. Bytes reach `keys.blob(d)` only under a reservation of d (reservations.py): the
  writer reserves d, puts the bytes in place unless d is `stored` already, then records d as
  `stored` in the same transaction that ends the reservation and links d to its repository or
  records the manifest (metadata: reserve_blob, link_blob, complete_upload, put_manifest).
  reserve_blob refuses (BUSY) while d is marked `deleting`, unless the mark is older than
  MARK_TTL. A push that relies on bytes it did not write does so in one transaction that holds
  (SELECT ... FOR SHARE on PostgreSQL; SQLite runs one writer at a time) the rows it relies on:
  put_manifest holds the links of the blobs and the child manifests it references, and the
  record and link of its own digest; mount_blob holds the source's link and the `stored` record.
  What it does not find there, it refuses: MANIFEST_BLOB_UNKNOWN, or a mount falls back to an
  upload; the client pushes again.
- The collector. It decides from a snapshot, but every deletion is a transaction that locks its
  candidates (FOR UPDATE SKIP LOCKED: a row a writer holds is no candidate this time) and
  re-checks them, in later statements that see what any writer holding them committed, against
  the definition above. It deletes bytes only of records it marked `deleting` (under its own
  token) at most MARK_TTL/2 before, and forgets a record only once its bytes are gone.
- So: while d is marked, no reservation of d exists (marking re-checks there is none, and none
  can start), nor any link or reference (marking re-checks; link_blob and put_manifest need a
  reservation, mount_blob a `stored` record, put_manifest a held link); so no writer puts or
  relies on bytes of d between the mark and the forget, and the delete between them destroys
  nothing anyone recorded. A writer that reserved d before the mark has ended its reservation
  (else no mark): it recorded d, and then d is in use and not marked, or it recorded nothing.
  A writer that reserves d after the forget puts its own bytes in place after the delete. The
  only way past a mark is its staleness: a writer takes over d MARK_TTL after the mark, by when
  the collector has stopped deleting (MARK_TTL/2), given clocks within MARK_TTL/2 of each other
  and no collector paused for longer than that between its check and a delete. Bytes without a
  record are claimed by inserting a marked record, which a reservation of d would have had to
  insert first: no writer holds them.
- Links and manifests: a push's held row cannot be locked by the collector, which skips it; a
  row the collector locked first is deleted before the push's transaction reads it, and the
  push finds it missing. Either the collector's re-check sees the push's reference, or the push
  sees that the collector removed what it needed.

Collectors may run at once (each marks under its own token, and a fresh mark is not re-marked),
but the lease "gc" keeps them to one at a time, and a background collector (collect_periodically)
runs in one process of all those sharing the metadata, through the lease "gc-schedule".

The collector holds the whole reference graph in memory while it plans, as distribution's mark
phase does: fine up to some millions of links and references.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

from portside.metadata.base import (
    MARK_TTL,
    AuditEntry,
    BlobState,
    CollectorStore,
    Lease,
    LeaseStore,
    ReferenceKind,
    Snapshot,
)
from portside.metrics import gc as metrics
from portside.registry import keys
from portside.registry.names import Digest
from portside.storage.base import BlobStore, ObjectInfo

log = logging.getLogger("portside.gc")

LEASE: Final = "gc"
SCHEDULE: Final = "gc-schedule"
LEASE_TTL: Final = timedelta(minutes=10)
BATCH: Final = 100  # blobs marked (then deleted, then forgotten) at a time
CACHE_SCAN_MAX: Final = 1000  # cached manifests expired per query
POLL: Final = 60.0  # how often a background collector asks whether a run is due, in seconds

Untagged = Literal["keep", "collect"]


@dataclass(frozen=True, slots=True)
class Policy:
    grace_period: timedelta = timedelta(hours=1)
    untagged: Untagged = "keep"
    upload_expiry: timedelta = timedelta(hours=24)
    # Cached manifests (a pull-through cache's) not pulled for this long go, with their tags;
    # None keeps them.
    cache_keep: timedelta | None = None
    # Keep an audit entry of each manifest collected, in the transaction that deletes it.
    audited: bool = False


class Progress(Protocol):
    def start(self, phase: str, total: int | None) -> None:
        """A phase begins, of total steps (None: unknown)."""

    def advance(self, steps: int = 1) -> None: ...


class _Silent:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


class CollectionRunning(Exception):
    """Another collector holds the lease."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"a collection is running: {lease.holder}, lease until {lease.expires_at}")
        self.lease = lease


@dataclass
class Summary:
    """What a run removed, or would remove (dry run)."""

    manifests: int = 0
    tags: int = 0
    links: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    orphans: int = 0  # blob bytes without a record
    orphan_bytes: int = 0
    uploads: int = 0  # upload sessions
    upload_bytes: int = 0
    strays: int = 0  # upload objects of no session
    stray_bytes: int = 0
    reservations: int = 0
    cached: int = 0  # cached manifests not pulled for mirroring.keep_unpulled

    @property
    def bytes_freed(self) -> int:
        return self.blob_bytes + self.orphan_bytes + self.upload_bytes + self.stray_bytes

    def rows(self) -> list[tuple[str, int, int | None]]:
        """(what, how many, bytes) for a table."""
        return [
            ("cached manifests not pulled lately", self.cached, None),
            ("manifests", self.manifests, None),
            ("tags", self.tags, None),
            ("blob links", self.links, None),
            ("blobs", self.blobs, self.blob_bytes),
            ("blob objects without a record", self.orphans, self.orphan_bytes),
            ("upload sessions", self.uploads, self.upload_bytes),
            ("upload objects without a session", self.strays, self.stray_bytes),
            ("expired blob reservations", self.reservations, None),
        ]

    def __str__(self) -> str:
        removed = ", ".join(f"{count} {what}" for what, count, _ in self.rows() if count)
        return f"{removed or 'nothing'}; {self.bytes_freed} bytes"


@dataclass
class Plan:
    """What a run is to remove, decided from one snapshot and one storage scan."""

    manifests: dict[str, list[str]] = field(default_factory=dict)  # repository → digests
    dangling_tags: dict[str, list[str]] = field(default_factory=dict)  # repository → tags
    links: dict[str, list[str]] = field(default_factory=dict)  # repository → digests
    blobs: dict[str, int] = field(default_factory=dict)  # digest → bytes in storage
    orphans: dict[str, int] = field(default_factory=dict)  # digest → bytes, with no record
    reservations: int = 0
    uploads: dict[str, list[ObjectInfo]] = field(default_factory=dict)  # id → its objects
    strays: dict[str, int] = field(default_factory=dict)  # key → bytes

    def summary(self) -> Summary:
        def size(objects: Collection[ObjectInfo]) -> int:
            return sum(info.size for info in objects)

        return Summary(
            manifests=sum(map(len, self.manifests.values())),
            tags=sum(map(len, self.dangling_tags.values())),
            links=sum(map(len, self.links.values())),
            blobs=len(self.blobs),
            blob_bytes=sum(self.blobs.values()),
            orphans=len(self.orphans),
            orphan_bytes=sum(self.orphans.values()),
            uploads=len(self.uploads),
            upload_bytes=sum(size(objects) for objects in self.uploads.values()),
            strays=len(self.strays),
            stray_bytes=sum(self.strays.values()),
            reservations=self.reservations,
        )


@dataclass
class _Repository:
    created: dict[str, datetime] = field(default_factory=dict)  # manifest → created_at
    subjects: dict[str, str] = field(default_factory=dict)  # referrer → subject
    tagged: set[str] = field(default_factory=set)
    tags: dict[str, str] = field(default_factory=dict)  # tag → digest
    references: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    children: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    links: dict[str, datetime] = field(default_factory=dict)  # digest → created_at

    def kept(self, cutoff: datetime, untagged: Untagged) -> set[str]:
        """The manifests that stay: all with `keep`; else those reachable from the tagged and
        the young through children and referrers."""
        if untagged == "keep":
            return set(self.created)
        referrers: dict[str, list[str]] = defaultdict(list)
        for referrer, subject in self.subjects.items():
            referrers[subject].append(referrer)
        young = {digest for digest, created in self.created.items() if created >= cutoff}
        pending = [*(self.tagged & self.created.keys()), *young]
        kept: set[str] = set()
        while pending:
            digest = pending.pop()
            if digest in kept:
                continue
            kept.add(digest)
            pending += [child for child in self.children[digest] if child in self.created]
            pending += referrers[digest]
        return kept


def plan(
    snapshot: Snapshot,
    blob_objects: Collection[ObjectInfo],
    upload_objects: Collection[ObjectInfo],
    policy: Policy,
    now: datetime,
) -> Plan:
    """Decide what is garbage (see the module's docstring) from a snapshot of the metadata and
    what storage holds under blobs/ and uploads/, scanned after the snapshot was read."""
    cutoff, expiry = now - policy.grace_period, now - policy.upload_expiry
    repositories: dict[str, _Repository] = defaultdict(_Repository)
    for manifest in snapshot.manifests:
        repository = repositories[manifest.repository]
        repository.created[manifest.digest] = manifest.created_at
        if manifest.subject is not None:
            repository.subjects[manifest.digest] = manifest.subject
    for tag in snapshot.tags:
        repositories[tag.repository].tagged.add(tag.digest)
        repositories[tag.repository].tags[tag.name] = tag.digest
    for reference in snapshot.references:
        repository = repositories[reference.repository]
        repository.references[reference.manifest].add(reference.digest)
        if reference.kind is ReferenceKind.MANIFEST:
            repository.children[reference.manifest].add(reference.digest)
    for link in snapshot.links:
        repositories[link.repository].links[link.digest] = link.created_at

    result = Plan()
    in_use: set[str] = set()
    for name, repository in repositories.items():
        kept = repository.kept(cutoff, policy.untagged)
        if garbage := sorted(repository.created.keys() - kept):
            result.manifests[name] = garbage
        if dangling := sorted(t for t, d in repository.tags.items() if d not in repository.created):
            result.dangling_tags[name] = dangling
        needed = kept | {digest for manifest in kept for digest in repository.references[manifest]}
        unlinked = sorted(
            digest
            for digest, created in repository.links.items()
            if digest not in needed and digest not in repository.created and created < cutoff
        )
        if unlinked:
            result.links[name] = unlinked
        in_use |= needed | (repository.links.keys() - set(unlinked) - set(garbage))

    sizes = {
        str(digest): info.size for info in blob_objects if (digest := keys.blob_digest(info.key))
    }
    live = [r for r in snapshot.reservations if r.created_at >= expiry]
    reserved = {r.digest for r in live}
    result.reservations = len(snapshot.reservations) - len(live)
    for blob in snapshot.blobs:
        if blob.digest in in_use or blob.digest in reserved:
            continue
        if blob.state is BlobState.DELETING:
            old = blob.marked_at is None or blob.marked_at < now - MARK_TTL
        else:
            old = blob.created_at < cutoff
        if old:
            result.blobs[blob.digest] = sizes.get(blob.digest, 0)
    recorded = {blob.digest for blob in snapshot.blobs}
    for info in blob_objects:
        digest = keys.blob_digest(info.key)
        if digest is not None and str(digest) not in recorded and info.modified < cutoff:
            result.orphans[str(digest)] = info.size

    sessions = {upload.id: upload for upload in snapshot.uploads}
    expired = {upload.id for upload in snapshot.uploads if upload.updated_at < expiry}
    result.uploads = {upload_id: [] for upload_id in sorted(expired)}
    for info in upload_objects:
        upload_id = keys.upload_of(info.key)
        if upload_id is None:
            continue  # not the registry's: left alone
        if upload_id in expired:
            result.uploads[upload_id].append(info)
        elif upload_id not in sessions and info.modified < expiry:
            result.strays[info.key] = info.size
    return result


def _batches(items: Collection[str]) -> Iterator[list[str]]:
    ordered = sorted(items)
    for start in range(0, len(ordered), BATCH):
        yield ordered[start : start + BATCH]


def default_holder() -> str:
    """Who collects, for leases and logs: host, process and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


Checkpoint = Callable[[str], Awaitable[None]]


async def _no_checkpoint(step: str) -> None:
    pass


class Collector:
    """One garbage collection run at a time over a blob store and a metadata store.

    checkpoint(step) is awaited between the steps of a run ("planned", "manifests", "links",
    "marked", "deleted", "claimed", "uploads"), so that tests can interleave pushes."""

    def __init__(
        self,
        storage: BlobStore,
        metadata: CollectorStore,
        policy: Policy,
        checkpoint: Checkpoint = _no_checkpoint,
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._policy = policy
        self._checkpoint = checkpoint

    def _audit_entry(self, now: datetime, lease: _Lease, reason: str) -> AuditEntry | None:
        """The audit entry of a manifest this run collects, but for its repository and digest."""
        if not self._policy.audited:
            return None
        detail = json.dumps({"reason": reason, "collector": lease.holder})
        return AuditEntry(now, "gc-delete", actor="gc", detail=detail)

    async def plan(self, now: datetime, progress: Progress) -> Plan:
        progress.start("reading metadata", None)
        snapshot = await self._metadata.gc_snapshot()
        progress.start("scanning storage", None)
        found: dict[str, list[ObjectInfo]] = {keys.BLOBS: [], keys.UPLOADS: []}
        for prefix, objects in found.items():
            async for info in self._storage.scan(prefix):
                objects.append(info)
                progress.advance()
        return plan(snapshot, found[keys.BLOBS], found[keys.UPLOADS], self._policy, now)

    async def collect(
        self,
        *,
        dry_run: bool = False,
        holder: str | None = None,
        progress: Progress | None = None,
    ) -> Summary:
        """Collect garbage, or with dry_run only say what would go. CollectionRunning if
        another collector holds the lease (a dry run takes none: it changes nothing)."""
        progress = progress or _Silent()
        now = datetime.now(UTC)
        if dry_run:
            summary = (await self.plan(now, progress)).summary()
            summary.cached = len(await self._unpulled(now))
            return summary
        lease = _Lease(self._metadata, holder or default_holder())
        await lease.take()
        started = time.monotonic()
        try:
            # First, so that what only expired cached manifests referenced goes in this run.
            cached = await self._expire_cached(now, lease)
            planned = await self.plan(now, progress)
            await self._checkpoint("planned")
            summary = await self._execute(planned, now, lease, progress)
            summary.cached = cached
        except Exception:
            metrics.runs.labels("failure").inc()
            raise
        finally:
            metrics.duration.observe(time.monotonic() - started)
            await lease.release()
        metrics.runs.labels("success").inc()
        metrics.freed_bytes.inc(summary.bytes_freed)
        return summary

    async def _unpulled(self, now: datetime) -> list[tuple[str, str]]:
        keep = self._policy.cache_keep
        if keep is None:
            return []
        return await self._metadata.expired_cached_manifests(now - keep, CACHE_SCAN_MAX)

    async def _expire_cached(self, now: datetime, lease: _Lease) -> int:
        """Remove the cached manifests not pulled for cache_keep, each only if still unpulled
        in the transaction that removes it; how many went."""
        keep = self._policy.cache_keep
        if keep is None:
            return 0
        removed = 0
        while found := await self._unpulled(now):
            for repository, digest in found:
                removed += await self._metadata.expire_cached_manifest(
                    repository, digest, now - keep, self._audit_entry(now, lease, "unpulled")
                )
            await lease.keep()
            if len(found) < CACHE_SCAN_MAX:
                break
        return removed

    async def _execute(
        self, planned: Plan, now: datetime, lease: _Lease, progress: Progress
    ) -> Summary:
        cutoff, expiry = now - self._policy.grace_period, now - self._policy.upload_expiry
        metadata, done = self._metadata, Summary()
        repositories = sorted(planned.manifests.keys() | planned.dangling_tags.keys())
        progress.start("manifests", len(repositories))
        for repository in repositories:
            if repository in planned.manifests:
                digests = planned.manifests[repository]
                audit = self._audit_entry(now, lease, "unreferenced")
                deleted = await metadata.delete_manifests(repository, digests, cutoff, True, audit)
                done.manifests += len(deleted)
            if repository in planned.dangling_tags:
                done.tags += len(await metadata.delete_dangling_tags(repository))
            progress.advance()
            await lease.keep()
        await self._checkpoint("manifests")

        progress.start("blob links", len(planned.links))
        for repository, digests in sorted(planned.links.items()):
            done.links += len(await metadata.delete_links(repository, digests, cutoff))
            progress.advance()
            await lease.keep()
        await self._checkpoint("links")
        done.reservations = await metadata.drop_reservations(expiry)

        progress.start("blobs", len(planned.blobs))
        token = f"{lease.holder}:{uuid.uuid4().hex[:8]}"
        for batch in _batches(planned.blobs):
            started = time.monotonic()  # before the mark's own timestamp
            marked = await metadata.mark_blobs(batch, cutoff, token)
            await self._checkpoint("marked")
            deleted = await self._delete_bytes(marked, started)
            await self._checkpoint("deleted")
            await metadata.forget_blobs(deleted, token)
            done.blobs += len(deleted)
            done.blob_bytes += sum(planned.blobs[digest] for digest in deleted)
            progress.advance(len(batch))
            await lease.keep()

        progress.start("blob objects without a record", len(planned.orphans))
        for batch in _batches(planned.orphans):
            started = time.monotonic()
            claimed = await metadata.claim_orphans({d: planned.orphans[d] for d in batch}, token)
            await self._checkpoint("claimed")
            deleted = await self._delete_bytes(claimed, started)
            await metadata.forget_blobs(deleted, token)
            done.orphans += len(deleted)
            done.orphan_bytes += sum(planned.orphans[digest] for digest in deleted)
            progress.advance(len(batch))
            await lease.keep()

        progress.start("uploads", len(planned.uploads) + len(planned.strays))
        for upload_id in await metadata.expire_uploads(planned.uploads, expiry):
            objects = planned.uploads[upload_id]
            for key in {keys.upload(upload_id), *(info.key for info in objects)}:
                await self._storage.delete(key)
            done.uploads += 1
            done.upload_bytes += sum(info.size for info in objects)
            progress.advance()
        for key, size in sorted(planned.strays.items()):
            await self._storage.delete(key)
            done.strays += 1
            done.stray_bytes += size
            progress.advance()
        await self._checkpoint("uploads")
        return done

    async def _delete_bytes(self, digests: Collection[str], started: float) -> list[str]:
        """Delete the bytes of blobs this run marked when monotonic time was `started`, as long
        as the marks are younger than MARK_TTL/2; the digests whose bytes are gone. The rest
        stay marked: once their marks are stale, a writer or a later run takes them over."""
        deadline = started + MARK_TTL.total_seconds() / 2
        deleted: list[str] = []
        for digest in sorted(digests):
            if time.monotonic() >= deadline:
                log.warning("garbage collection: %d marked blobs left for later", len(digests))
                break
            await self._storage.delete(keys.blob(Digest.parse(digest)))
            deleted.append(digest)
        return deleted


class _Lease:
    """The collector's lease, renewed as a run goes on."""

    def __init__(self, metadata: LeaseStore, holder: str) -> None:
        self._metadata = metadata
        self.holder = holder
        self._renewed = 0.0

    async def take(self) -> None:
        lease = await self._metadata.acquire_lease(LEASE, self.holder, LEASE_TTL)
        if lease.holder != self.holder:
            raise CollectionRunning(lease)
        self._renewed = time.monotonic()

    async def keep(self) -> None:
        if time.monotonic() - self._renewed > LEASE_TTL.total_seconds() / 3:
            await self.take()

    async def release(self) -> None:
        await asyncio.shield(self._metadata.release_lease(LEASE, self.holder))


async def collect_periodically(
    collector: Collector, metadata: LeaseStore, interval: timedelta, poll: float = POLL
) -> None:
    """Collect every interval, in one process of all that share the metadata: each one asks
    every poll seconds (or interval, if shorter) for the lease "gc-schedule", which lasts
    interval; the one that gets it runs. Runs until cancelled; a failed run is logged."""
    holder = default_holder()
    wait = min(poll, interval.total_seconds())
    while True:
        await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not secrets
        try:
            attempt = f"{holder}:{uuid.uuid4().hex[:8]}"  # a new holder: only a free lease
            if (await metadata.acquire_lease(SCHEDULE, attempt, interval)).holder != attempt:
                continue
            started = time.monotonic()
            summary = await collector.collect(holder=holder)
            log.info("garbage collection removed %s in %.1fs", summary, time.monotonic() - started)
        except CollectionRunning as running:
            log.info("garbage collection skipped: %s", running)
        except Exception:
            log.exception("garbage collection failed")
