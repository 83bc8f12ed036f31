"""Taking a blob in: receive its bytes, hash them as they arrive, check size and digest, put them
in place under a reservation and record them. Uploads (whole bodies and chunks), manifest pushes
and the pull-through cache's fills all go through here, so a blob reaches `keys.blob(digest)`
only verified, and only the way registry/gc.py's argument expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

from anyio import to_thread

from portside.metadata.base import Claim, RequestStore, Unrecordable
from portside.registry import keys
from portside.registry.errors import DigestInvalid, SizeInvalid, TooLarge
from portside.registry.names import Digest
from portside.registry.reservations import reserved
from portside.storage.base import BlobStore, NotFound, Writer

T = TypeVar("T")

BATCH_BYTES: Final = 4 * 1024 * 1024
# A whole blob of a known length up to this is taken in memory and, once checked, put in place
# in one write; a larger one is written aside and moved. On S3 a move is a copy and a delete, and
# the object aside costs requests of its own: most of a small image's push, before this.
SMALL_BLOB_BYTES: Final = 4 * 1024 * 1024
# Hashed in the event loop up to this (less than a hop to a thread costs); larger ones in a
# thread, so that the loop does not stand still for the 5 ms that 4 MiB take.
HASH_IN_LOOP_BYTES: Final = 64 * 1024
# Records without a reservation tried before taking one: each fails only when a collector has
# forgotten blobs meanwhile, which it does for moments of a run.
UNRESERVED_TRIES: Final = 3


async def _absorb(writer: Writer, hasher: hashlib._Hash | None, data: bytes) -> None:
    """Write data and hash it at once: hashlib lets go of the GIL, so a thread hashes while the
    event loop writes."""
    if hasher is None:
        await writer.write(data)
        return
    await asyncio.gather(to_thread.run_sync(hasher.update, data), writer.write(data))


async def receive(
    writer: Writer,
    body: AsyncIterator[bytes],
    hasher: hashlib._Hash | None,
    length: int | None = None,
    limit: int | None = None,
) -> int:
    """Write body through writer, hashing it into hasher; the number of bytes received. length,
    when given, is how many must arrive (SizeInvalid otherwise); limit caps the object's size
    (TooLarge). The writer is neither committed nor closed.

    The server reads the socket only while the app awaits the body, so bytes are gathered in
    batches that are hashed and written while the next batch arrives, not in turn with it."""
    start = writer.size
    if limit is not None and length is not None and start + length > limit:
        raise TooLarge({"limit": limit})
    received = 0
    batch: list[bytes] = []
    batched = 0
    absorbing: asyncio.Future[None] | None = None
    try:
        async for chunk in body:
            received += len(chunk)
            if limit is not None and start + received > limit:
                raise TooLarge({"limit": limit})
            batch.append(chunk)
            batched += len(chunk)
            if batched >= BATCH_BYTES:
                if absorbing is not None:
                    await absorbing
                absorbing = asyncio.ensure_future(_absorb(writer, hasher, b"".join(batch)))
                batch, batched = [], 0
        if length is not None and received != length:
            raise SizeInvalid({"expected": length, "received": received})
        if absorbing is not None:
            await absorbing
        if batched:
            await _absorb(writer, hasher, b"".join(batch))
    except BaseException:
        if absorbing is not None:
            absorbing.cancel()
            with contextlib.suppress(BaseException):
                await absorbing
        raise
    return received


def check_digest(digest: Digest, actual: str) -> None:
    """DigestInvalid unless actual (hex) is digest's."""
    if actual != digest.encoded:
        expected, found = str(digest), f"{digest.algorithm}:{actual}"
        raise DigestInvalid({"expected": expected, "actual": found})


async def read_digest(storage: BlobStore, key: str, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    async for chunk in storage.read(key):
        hasher.update(chunk)
    return hasher.hexdigest()


async def hash_object(storage: BlobStore, key: str, algorithm: str) -> str:
    """The hex digest of the object under key; NotFound if there is none. A local file is
    hashed in a thread, which hashlib lets run beside the event loop and other such threads."""
    path = storage.local_path(key)
    if path is None:
        return await read_digest(storage, key, algorithm)
    return await to_thread.run_sync(hash_file, path, algorithm, key)


def hash_file(path: Path, algorithm: str, key: str | None = None) -> str:
    """The hex digest of a file; NotFound (naming key, else the path) if there is none."""
    try:
        with path.open("rb") as file:
            return hashlib.file_digest(file, algorithm).hexdigest()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFound(key or str(path)) from None


async def store(
    metadata: RequestStore,
    digest: Digest,
    size: int,
    put: Callable[[], Awaitable[None]],
    record: Callable[[Claim], Awaitable[T]],
    rewritable: bool = False,
) -> T:
    """Make checked bytes the blob of digest with put(), unless the registry stores that blob
    already, and record it with record(reservation): under a reservation, so that no collector
    deletes the bytes before the record makes them reachable.

    rewritable: put() can write the bytes again (they are in memory). Then they are recorded
    without a reservation first, which saves its transaction: the record itself checks that no
    collector can have deleted them (metadata.base.Unreserved), and where it cannot be sure,
    the bytes are written again and recorded again, then under a reservation."""
    if rewritable:
        for _ in range(UNRESERVED_TRIES):
            claim = await metadata.check_blob(str(digest))
            if claim is None:  # being collected: the reservation waits for the collector
                break
            if not claim.stored:
                await put()
            try:
                return await record(claim)
            except Unrecordable:
                continue
    async with reserved(metadata, digest, size) as reservation:
        if not reservation.stored:
            await put()
        return await record(reservation.token)


async def _in_memory(body: AsyncIterator[bytes], length: int, limit: int | None) -> bytes:
    """A body that must be length bytes long, whole; SizeInvalid (as soon as it is longer) or
    TooLarge as receive() would raise them."""
    if limit is not None and length > limit:
        raise TooLarge({"limit": limit})
    chunks: list[bytes] = []
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > length:
            break
        chunks.append(chunk)
    if received != length:
        raise SizeInvalid({"expected": length, "received": received})
    return b"".join(chunks)


async def _recorded_size(
    record: Callable[[int, Claim], Awaitable[None]], size: int, token: Claim
) -> int:
    await record(size, token)
    return size


async def ingest(
    storage: BlobStore,
    metadata: RequestStore,
    digest: Digest,
    body: AsyncIterator[bytes],
    record: Callable[[int, Claim], Awaitable[None]],
    length: int | None = None,
    limit: int | None = None,
    owner: str | None = None,
) -> int:
    """A whole blob: received into an object of its own (under owner's upload id, if any, so
    that a collection knows whose it is), checked against digest, stored and recorded with
    record(size, reservation). Returns its size."""
    if length is not None and length <= SMALL_BLOB_BYTES:
        data = await _in_memory(body, length, limit)
        hasher = hashlib.new(digest.algorithm)
        if length <= HASH_IN_LOOP_BYTES:
            hasher.update(data)
        else:
            await to_thread.run_sync(hasher.update, data)
        check_digest(digest, hasher.hexdigest())
        return await store(
            metadata,
            digest,
            length,
            lambda: storage.put(keys.blob(digest), data),
            lambda token: _recorded_size(record, length, token),
            rewritable=True,
        )
    part = keys.upload_part(owner or uuid.uuid4().hex, uuid.uuid4().hex)
    hasher = hashlib.new(digest.algorithm)
    try:
        writer = await storage.writer(part)
        try:
            size = await receive(writer, body, hasher, length, limit)
            check_digest(digest, hasher.hexdigest())
        except BaseException:
            await writer.cancel()
            raise
        await writer.commit()
        await store(
            metadata,
            digest,
            size,
            lambda: storage.move(part, keys.blob(digest)),
            lambda token: record(size, token),
        )
    finally:
        await storage.delete(part)  # already gone when it became the blob
    return size
