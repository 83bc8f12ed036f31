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
- The collector. It decides from candidates it reads a page at a time, but every deletion is a
  transaction that locks its
  candidates (FOR UPDATE SKIP LOCKED: a row a writer holds is no candidate this time) and
  re-checks them, in later statements that see what any writer holding them committed, against
  the definition above. It deletes bytes only of records it marked `deleting` (under its own
  token) at most MARK_TTL/2 before, and forgets a record only once its bytes are gone.
- So: while d is marked, no reservation of d exists (marking re-checks there is none, and none
  can start), nor any link or reference (marking re-checks; link_blob and put_manifest need a
  reservation or an unreserved record's checks, below; mount_blob a `stored` record,
  put_manifest a held link); so no writer puts or
  relies on bytes of d between the mark and the forget, and the delete between them destroys
  nothing anyone recorded. A writer that reserved d before the mark has ended its reservation
  (else no mark): it recorded d, and then d is in use and not marked, or it recorded nothing.
  A writer that reserves d after the forget puts its own bytes in place after the delete. The
  only way past a mark is its staleness: a writer takes over d MARK_TTL after the mark, by when
  the collector has stopped deleting (MARK_TTL/2), given clocks within MARK_TTL/2 of each other
  and no collector paused for longer than that between its check and a delete. Bytes without a
  record are claimed by inserting a marked record, which a reservation of d would have had to
  insert first: no writer holds them.
- A writer that holds d's bytes in memory (a small blob or a manifest, registry/ingest.py
  `rewritable`) records them without a reservation: it reads the count of forgotten records
  (which every forget raises in its transaction) before it writes the bytes, and its record,
  having locked d's row, fails unless that count is unchanged, d is not marked and (if it
  found d stored and wrote nothing) d is still stored. Its bytes can only be destroyed by a
  delete between a mark or claim of d and its forget: if the forget came before the record,
  the count moved; if not, the record sees the mark (or claim) and fails. It then writes the
  bytes again and retries, and in the end reserves.
- Links and manifests: a push's held row cannot be locked by the collector, which skips it; a
  row the collector locked first is deleted before the push's transaction reads it, and the
  push finds it missing. Either the collector's re-check sees the push's reference, or the push
  sees that the collector removed what it needed.

Collectors may run at once (each marks under its own token, and a fresh mark is not re-marked),
but the lease "gc" keeps them to one at a time, and a background collector (collect_periodically)
runs in one process of all those sharing the metadata, through the lease "gc-schedule".

The collector streams, so that its memory does not grow with the registry: it plans and cleans
REPOSITORY_PAGE repositories at a time (names read in pages; their candidate manifests, dangling
tags and unreferenced links read by queries that return only candidates), then finds garbage
blobs BATCH at a time with a query for records nothing links, references or reserves (in digest
order), and checks what storage holds against the records SCAN_BATCH objects at a time. What it
holds at once is a page's garbage: manifests that a chain of untagged candidates could keep are
decided together per repository, so the largest repository's garbage manifests are held whole.
A dry run deletes nothing, so it also holds what it would remove (the links and references that
go), to count the blobs those removals free. A page's garbage manifests go in one transaction,
and so do its dangling tags and its unreferenced links: each statement of it (lock, re-check,
delete) covers the whole page, not one repository.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

from portside.metadata.base import (
    MARK_TTL,
    AuditEntry,
    CollectionRun,
    CollectorStore,
    Lease,
    LeaseStore,
    ManifestCandidate,
)
from portside.metrics import gc as metrics
from portside.registry import keys
from portside.registry.names import Digest
from portside.registry.retention import Retention
from portside.storage.base import BlobStore, ObjectInfo

log = logging.getLogger("portside.gc")

LEASE: Final = "gc"
SCHEDULE: Final = "gc-schedule"
LEASE_TTL: Final = timedelta(minutes=10)
BATCH: Final = 100  # blobs marked (then deleted, then forgotten) at a time
REPOSITORY_PAGE: Final = 500  # repositories planned and cleaned at a time
SCAN_BATCH: Final = 1000  # storage objects checked against the records at a time
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
    blob_bytes: int = 0  # as recorded when the blob was pushed
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


def garbage_manifests(candidates: Iterable[ManifestCandidate]) -> list[str]:
    """Of one repository's candidates, the garbage: those that no manifest that stays needs,
    through a chain of candidates (a candidate's parent or subject that is no candidate stays).
    The fixpoint delete_manifests re-checks in its transaction."""
    remaining = {candidate.digest: candidate for candidate in candidates}
    while needed := [
        digest
        for digest, candidate in remaining.items()
        if any(parent not in remaining for parent in candidate.parents)
        or (candidate.subject is not None and candidate.subject not in remaining)
    ]:
        for digest in needed:
            del remaining[digest]
    return sorted(remaining)


def orphans(
    objects: Iterable[ObjectInfo], recorded: Collection[str], cutoff: datetime
) -> dict[str, int]:
    """Bytes under blobs/ without a record, written before cutoff: digest to size."""
    found: dict[str, int] = {}
    for info in objects:
        digest = keys.blob_digest(info.key)
        if digest is not None and str(digest) not in recorded and info.modified < cutoff:
            found[str(digest)] = info.size
    return found


@dataclass
class _Removals:
    """What a dry run would remove that holds blobs: by digest, the repositories whose links
    of it go, and the (repository, manifest) references to it that go with their manifests."""

    links: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    references: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))

    def digests(self) -> set[str]:
        return self.links.keys() | self.references.keys()


async def _batches(
    objects: AsyncIterator[ObjectInfo], size: int
) -> AsyncIterator[list[ObjectInfo]]:
    batch: list[ObjectInfo] = []
    async for info in objects:
        batch.append(info)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def default_holder() -> str:
    """Who collects, for leases and logs: host, process and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


Checkpoint = Callable[[str], Awaitable[None]]


async def _no_checkpoint(step: str) -> None:
    pass


class Collector:
    """One garbage collection run at a time over a blob store and a metadata store.

    checkpoint(step) is awaited between the steps of a run ("manifests" and "links" after each
    page of repositories, "marked", "deleted", "claimed", "uploads"), so that tests can
    interleave pushes."""

    def __init__(
        self,
        storage: BlobStore,
        metadata: CollectorStore,
        policy: Policy,
        checkpoint: Checkpoint = _no_checkpoint,
        retention: Retention | None = None,
    ) -> None:
        """retention: the rules that remove tags first, in each run that is no dry run."""
        self._storage = storage
        self._metadata = metadata
        self._policy = policy
        self._checkpoint = checkpoint
        self._retention = retention

    def _audit_entry(self, now: datetime, lease: _Lease, reason: str) -> AuditEntry | None:
        """The audit entry of a manifest this run collects, but for its repository and digest."""
        if not self._policy.audited:
            return None
        detail = json.dumps({"reason": reason, "collector": lease.holder})
        return AuditEntry(now, "gc-delete", actor="gc", detail=detail)

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
            summary = await self._count(now, progress)
            summary.cached = len(await self._unpulled(now))
            return summary
        lease = _Lease(self._metadata, holder or default_holder())
        await lease.take()
        started = time.monotonic()
        try:
            if self._retention is not None:  # first too: what it untags goes in this run
                await self._retention.apply(now, lease.keep)
            # First, so that what only expired cached manifests referenced goes in this run.
            cached = await self._expire_cached(now, lease)
            summary = await self._execute(now, lease, progress)
            summary.cached = cached
            # For the web UI's usage page: when the last run ended and what it freed.
            removed = [
                {"what": what, "removed": count, "bytes": size}
                for what, count, size in summary.rows()
            ]
            run = CollectionRun(
                finished_at=datetime.now(UTC),
                seconds=time.monotonic() - started,
                bytes_freed=summary.bytes_freed,
                summary=json.dumps(removed, separators=(",", ":")),
            )
            await self._metadata.record_collection(run)
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

    async def _repository_pages(self, progress: Progress) -> AsyncIterator[list[str]]:
        progress.start("repositories", None)
        after: str | None = None
        while page := await self._metadata.repository_names(after, REPOSITORY_PAGE):
            yield page
            progress.advance(len(page))
            if len(page) < REPOSITORY_PAGE:
                return
            after = page[-1]

    async def _garbage_manifests(
        self, page: list[str], cutoff: datetime
    ) -> dict[str, list[ManifestCandidate]]:
        """The page's garbage manifests by repository, under `gc_untagged: collect`."""
        if self._policy.untagged == "keep":
            return {}
        by_repository: dict[str, list[ManifestCandidate]] = defaultdict(list)
        for candidate in await self._metadata.manifest_candidates(page, cutoff):
            by_repository[candidate.repository].append(candidate)
        found: dict[str, list[ManifestCandidate]] = {}
        for name, candidates in by_repository.items():
            if garbage := set(garbage_manifests(candidates)):
                found[name] = [c for c in candidates if c.digest in garbage]
        return found

    async def _execute(self, now: datetime, lease: _Lease, progress: Progress) -> Summary:
        cutoff, expiry = now - self._policy.grace_period, now - self._policy.upload_expiry
        metadata, done = self._metadata, Summary()
        async for page in self._repository_pages(progress):
            # Each kind of the page's garbage goes in one transaction, by one set of statements.
            if garbage := await self._garbage_manifests(page, cutoff):
                audit = self._audit_entry(now, lease, "unreferenced")
                doomed = {name: [c.digest for c in found] for name, found in garbage.items()}
                deleted = await metadata.delete_manifests(doomed, cutoff, True, audit)
                done.manifests += sum(map(len, deleted.values()))
            if dangling := await metadata.dangling_tags(page):
                untagged = await metadata.delete_dangling_tags(list(dangling))
                done.tags += sum(map(len, untagged.values()))
            await self._checkpoint("manifests")
            # Read after the manifests went: the links only they referenced are unreferenced now.
            if links := await metadata.unreferenced_links(page, cutoff):
                unlinked = await metadata.delete_links(links, cutoff)
                done.links += sum(map(len, unlinked.values()))
            await self._checkpoint("links")
            await lease.keep()
        done.reservations = await metadata.drop_reservations(expiry)

        progress.start("blobs", None)
        token = f"{lease.holder}:{uuid.uuid4().hex[:8]}"
        after: str | None = None
        while found := await metadata.garbage_blobs(cutoff, expiry, after, BATCH):
            after = max(found)
            started = time.monotonic()  # before the mark's own timestamp
            marked = await metadata.mark_blobs(found, cutoff, token)
            await self._checkpoint("marked")
            gone = await self._delete_bytes(marked, started)
            await self._checkpoint("deleted")
            await metadata.forget_blobs(gone, token)
            done.blobs += len(gone)
            done.blob_bytes += sum(marked[digest] for digest in gone)
            progress.advance(len(found))
            await lease.keep()

        progress.start("blob objects without a record", None)
        async for batch in _batches(self._storage.scan(keys.BLOBS), SCAN_BATCH):
            digests = {str(d) for info in batch if (d := keys.blob_digest(info.key)) is not None}
            unrecorded = orphans(batch, await metadata.recorded_blobs(digests), cutoff)
            if unrecorded:
                started = time.monotonic()
                claimed = await metadata.claim_orphans(unrecorded, token)
                await self._checkpoint("claimed")
                gone = await self._delete_bytes(claimed, started)
                await metadata.forget_blobs(gone, token)
                done.orphans += len(gone)
                done.orphan_bytes += sum(unrecorded[digest] for digest in gone)
            progress.advance(len(batch))
            await lease.keep()

        await self._expire_uploads(expiry, done, progress, dry_run=False)
        await self._checkpoint("uploads")
        return done

    async def _count(self, now: datetime, progress: Progress) -> Summary:
        """What _execute would remove, read without changing anything."""
        cutoff, expiry = now - self._policy.grace_period, now - self._policy.upload_expiry
        metadata, would, removals = self._metadata, Summary(), _Removals()
        async for page in self._repository_pages(progress):
            for name, garbage in (await self._garbage_manifests(page, cutoff)).items():
                would.manifests += len(garbage)
                gone = {candidate.digest for candidate in garbage}
                for candidate in garbage:
                    removals.links[candidate.digest].add(name)  # its own link goes with it
                    for reference in candidate.references:
                        removals.references[reference].add((name, candidate.digest))
                # What only garbage manifests reference is unreferenced once they go.
                freed = {reference for c in garbage for reference in c.references} - gone
                for digest in await metadata.links_made_before(name, freed, cutoff):
                    found = await metadata.manifests_referencing(name, digest, len(gone) + 1)
                    if set(found) <= gone:
                        would.links += 1
                        removals.links[digest].add(name)
            would.tags += sum(map(len, (await metadata.dangling_tags(page)).values()))
            for name, digests in (await metadata.unreferenced_links(page, cutoff)).items():
                would.links += len(digests)
                for digest in digests:
                    removals.links[digest].add(name)
        would.reservations = await metadata.expired_reservations(expiry)

        progress.start("blobs", None)
        held = removals.digests()
        after: str | None = None
        while unheld := await metadata.garbage_blobs(cutoff, expiry, after, BATCH):
            after = max(unheld)
            for digest, size in unheld.items():
                if digest not in held:
                    would.blobs += 1
                    would.blob_bytes += size
            progress.advance(len(unheld))
        for digest, size in (await metadata.releasable_blobs(held, cutoff, expiry)).items():
            links, references = removals.links[digest], removals.references[digest]
            holders = await metadata.blob_holders(digest, max(len(links), len(references)) + 1)
            if set(holders.links) <= links and set(holders.references) <= references:
                would.blobs += 1
                would.blob_bytes += size

        progress.start("blob objects without a record", None)
        async for batch in _batches(self._storage.scan(keys.BLOBS), SCAN_BATCH):
            named = {str(d) for info in batch if (d := keys.blob_digest(info.key)) is not None}
            unrecorded = orphans(batch, await metadata.recorded_blobs(named), cutoff)
            would.orphans += len(unrecorded)
            would.orphan_bytes += sum(unrecorded.values())
            progress.advance(len(batch))

        await self._expire_uploads(expiry, would, progress, dry_run=True)
        return would

    async def _expire_uploads(
        self, expiry: datetime, done: Summary, progress: Progress, *, dry_run: bool
    ) -> None:
        """Upload sessions not updated since expiry go with their objects, and objects of no
        session written before expiry; a dry run counts them."""
        progress.start("uploads", None)
        expired: set[str] = set()  # sessions this run ended (held: they are garbage)
        async for batch in _batches(self._storage.scan(keys.UPLOADS), SCAN_BATCH):
            owners = {info.key: keys.upload_of(info.key) for info in batch}
            sessions = await self._metadata.upload_sessions(
                {owner for owner in owners.values() if owner is not None} - expired
            )
            ending = [upload_id for upload_id, at in sessions.items() if at < expiry]
            if not dry_run:
                ending = await self._metadata.expire_uploads(ending, expiry)
            done.uploads += len(ending)
            expired.update(ending)
            for info in batch:
                owner = owners[info.key]
                if owner is None:
                    continue  # not the registry's: left alone
                if owner in expired:
                    done.upload_bytes += info.size
                elif owner not in sessions and info.modified < expiry:
                    done.strays += 1
                    done.stray_bytes += info.size
                else:
                    continue
                if not dry_run:
                    await self._storage.delete(info.key)
                progress.advance()
        # Sessions whose objects are gone already (or never were).
        after: str | None = None
        while found := await self._metadata.expired_uploads(expiry, after, SCAN_BATCH):
            after = found[-1]
            ending = [upload_id for upload_id in found if upload_id not in expired]
            if not dry_run:
                ending = await self._metadata.expire_uploads(ending, expiry)
                for upload_id in ending:
                    await self._storage.delete(keys.upload(upload_id))
            done.uploads += len(ending)
            expired.update(ending)

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
