"""Backing up and restoring the embedded default (SQLite metadata, blobs in any store), online.

A backup is a folder laid out as a filesystem registry's storage_path, so that a restore is a
copy back and the folder can even be served as it is:

    registry.db                       the metadata database, as SQLite's online backup copied it
    blobs/<algorithm>/<ab>/<encoded>  every blob stored when the database was copied
    backup.json                       when, by which version, how many blobs and bytes

The database is copied first, then the blobs it records as stored, so that every manifest in
the backup has its blobs there. A blob collected between the two (garbage, then) is taken out of
the backup's database as `verify --repair` would. Blobs already in the folder from an earlier
backup are not copied again (content-addressed: same key, same bytes), and those the new
database no longer records are deleted once it is in place. A restore copies every blob back,
checking its digest, before the database, so a restore cut short leaves no database behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Final

from anyio import to_thread

from portside.metadata.base import BlobRecord, BlobState
from portside.metadata.snapshot import copy_database
from portside.metadata.sql import SqlMetadataStore
from portside.registry import keys
from portside.registry.errors import DigestInvalid, SizeInvalid
from portside.registry.gc import Progress
from portside.registry.ingest import check_digest, hash_file, receive
from portside.registry.local_files import place
from portside.registry.names import Digest
from portside.registry.verify import Fault, Finding, take_out
from portside.storage.base import BlobStore, NotFound
from portside.storage.filesystem import FilesystemBlobStore

DATABASE: Final = "registry.db"
DESCRIPTION: Final = "backup.json"
FORMAT: Final = 1
PAGE: Final = 500
# Blobs copied at once: copies and hashes run in threads, so disks and cores stay busy.
CONCURRENCY: Final = 4


class BackupInvalid(Exception):
    """A folder that holds no backup, or a restore target that is not fresh."""


@dataclass(slots=True)
class Summary:
    blobs: int = 0  # blobs in the backup (or restored)
    bytes: int = 0
    copied: int = 0  # of those, copied this time
    copied_bytes: int = 0
    pruned: int = 0  # blobs of an earlier backup the new database no longer records
    # blobs that could not be copied: gone, or (restoring) not matching their digest
    lost: list[Finding] = field(default_factory=list)


class _Silent:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


@contextlib.asynccontextmanager
async def _opened(database: Path) -> AsyncIterator[SqlMetadataStore]:
    """The store over a database file of the backup's, without the writer lock file it leaves."""
    store = SqlMetadataStore(f"sqlite:///{database}")
    try:
        yield store
    finally:
        await store.close()
        for suffix in ("-writer.lock", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)


async def _stored(store: SqlMetadataStore) -> AsyncIterator[list[BlobRecord]]:
    after: str | None = None
    while page := await store.list_blobs(after, PAGE):
        after = page[-1].digest
        yield [r for r in page if r.state is BlobState.STORED]


async def _transfer(source: BlobStore, target: BlobStore, record: BlobRecord, check: bool) -> None:
    """Copy a blob into target under a temporary key, then move it into place; with check, its
    bytes are hashed and must match its digest (DigestInvalid, SizeInvalid). Between local
    files, the kernel copies (copy_file_range) in a thread."""
    digest = Digest.parse(record.digest)
    temp = keys.upload_part(uuid.uuid4().hex, uuid.uuid4().hex)
    origin, copy = source.local_path(keys.blob(digest)), target.local_path(temp)
    try:
        if origin is not None and copy is not None:
            await to_thread.run_sync(place, origin, copy, False)
            size = copy.stat().st_size
            if size != record.size:
                raise SizeInvalid({"expected": record.size, "received": size})
            if check:
                actual = await to_thread.run_sync(hash_file, copy, digest.algorithm)
                check_digest(digest, actual)
        else:
            await _stream(source, target, temp, record, check)
        await target.move(temp, keys.blob(digest))
    finally:
        await target.delete(temp)  # gone already once moved


async def _stream(
    source: BlobStore, target: BlobStore, temp: str, record: BlobRecord, check: bool
) -> None:
    digest = Digest.parse(record.digest)
    hasher = hashlib.new(digest.algorithm) if check else None
    writer = await target.writer(temp)
    try:
        await receive(writer, source.read(keys.blob(digest)), hasher, record.size)
        if hasher is not None:
            check_digest(digest, hasher.hexdigest())
    except BaseException:
        await writer.cancel()
        raise
    await writer.commit()


async def _present(target: BlobStore, record: BlobRecord) -> bool:
    try:
        return await target.stat(keys.blob(Digest.parse(record.digest))) == record.size
    except NotFound:
        return False


async def _copy_all(
    store: SqlMetadataStore,
    source: BlobStore,
    target: BlobStore,
    check: bool,
    progress: Progress,
    summary: Summary,
) -> set[str]:
    """Copy every blob store records as stored from source into target; without check, those
    target has already are not copied again. Blobs that cannot be copied are taken out of store
    and listed in summary.lost. The digests of the blobs target now holds."""
    kept: set[str] = set()
    lost: list[Finding] = []
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(record: BlobRecord) -> None:
        async with limit:
            if check or not await _present(target, record):
                try:
                    await _transfer(source, target, record, check)
                except NotFound:
                    lost.append(Finding(Fault.MISSING, record.digest, "gone from the source"))
                    return
                except (DigestInvalid, SizeInvalid) as error:
                    lost.append(Finding(Fault.CORRUPT, record.digest, f"{error.detail}"))
                    return
                summary.copied += 1
                summary.copied_bytes += record.size
        kept.add(record.digest)
        summary.blobs += 1
        summary.bytes += record.size
        progress.advance(record.size)

    async for page in _stored(store):
        await asyncio.gather(*(one(record) for record in page))
    # After the listing: taking a blob out deletes records behind its page cursor.
    for finding in lost:
        summary.lost.append(await take_out(target, store, finding))
    return kept


async def backup(
    storage: BlobStore, database: Path, destination: Path, progress: Progress | None = None
) -> Summary:
    """Back up the registry of storage and the SQLite database into destination (new, or an
    earlier backup: then only blobs it lacks are copied)."""
    progress = progress or _Silent()
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()) and not (destination / DESCRIPTION).is_file():
        raise BackupInvalid(f"{destination} is neither empty nor a backup")
    target = FilesystemBlobStore(destination)
    await target.delete(keys.UPLOADS)  # copies an interrupted backup left
    summary = Summary()
    snapshot = destination / f".{DATABASE}.new"
    progress.start("copying the database", None)
    await to_thread.run_sync(copy_database, database, snapshot)
    progress.start("copying blobs", None)
    try:
        async with _opened(snapshot) as store:
            kept = await _copy_all(store, storage, target, False, progress, summary)
        # The database last: until here, the folder's database is the last backup's, and
        # every blob it records is still there.
        await to_thread.run_sync(copy_database, snapshot, destination / DATABASE)
    finally:
        snapshot.unlink(missing_ok=True)
    progress.start("pruning blobs of earlier backups", None)
    async for key in target.list(keys.BLOBS):
        digest = keys.blob_digest(key)
        if digest is None or str(digest) not in kept:
            await target.delete(key)
            summary.pruned += 1
    description = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "portside": version("portside"),
        "database": DATABASE,
        "blobs": summary.blobs,
        "bytes": summary.bytes,
    }
    await target.put(DESCRIPTION, json.dumps(description, indent=2).encode() + b"\n")
    return summary


async def restore(
    source: Path,
    storage: BlobStore,
    database: Path,
    progress: Progress | None = None,
) -> Summary:
    """Restore the backup in source into a fresh registry: the blobs into storage, each checked
    against its digest, then the database at database (which must not exist yet). A blob that
    is missing from the backup or corrupt there is left out, as `verify --repair` would leave
    it, and listed in summary.lost."""
    progress = progress or _Silent()
    if not (source / DESCRIPTION).is_file() or not (source / DATABASE).is_file():
        raise BackupInvalid(f"no backup at {source} (no {DESCRIPTION} and {DATABASE})")
    if database.exists():
        raise BackupInvalid(f"{database} exists: restore into a fresh registry")
    database.parent.mkdir(parents=True, exist_ok=True)
    staged = database.with_name(f".{database.name}.restoring")
    progress.start("copying the database", None)
    await to_thread.run_sync(copy_database, source / DATABASE, staged)
    summary = Summary()
    progress.start("restoring blobs", None)
    try:
        async with _opened(staged) as store:
            await _copy_all(store, FilesystemBlobStore(source), storage, True, progress, summary)
        await to_thread.run_sync(copy_database, staged, database)
    finally:
        staged.unlink(missing_ok=True)
    return summary
