"""Blob upload sessions: start, append chunks, finish with a digest, cancel, mount.

An upload's bytes live in the blob store under keys.upload(id) from its first chunk on, its offset
in metadata, so any worker process (or, on shared storage, any instance) can take the next
request. The sha256 state of an upload is kept in this process only as a shortcut: when the next
chunk lands elsewhere, the digest is recomputed from the stored bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from typing import Final

from anyio import to_thread

from portside.metadata.base import Conflict, RequestStore, Upload
from portside.registry import keys
from portside.registry.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    SizeInvalid,
    TooLarge,
    UploadOutOfOrder,
)
from portside.registry.names import Digest
from portside.registry.reservations import reserved
from portside.storage.base import BlobStore, NotFound, Writer

HASHERS_KEPT: Final = 256
BATCH_BYTES: Final = 4 * 1024 * 1024


async def _absorb(writer: Writer, hasher: hashlib._Hash | None, data: bytes) -> None:
    """Write data and hash it at once: hashlib lets go of the GIL, so a thread hashes while the
    event loop writes."""
    if hasher is None:
        await writer.write(data)
        return
    await asyncio.gather(to_thread.run_sync(hasher.update, data), writer.write(data))


class _Hashers:
    """sha256 states of recent uploads in this process, keyed by upload id, with their offset."""

    def __init__(self) -> None:
        self._states: OrderedDict[str, tuple[int, hashlib._Hash]] = OrderedDict()

    def take(self, upload_id: str, offset: int) -> hashlib._Hash | None:
        found = self._states.pop(upload_id, None)
        if offset == 0:
            return hashlib.sha256()
        if found is None or found[0] != offset:
            return None
        return found[1]

    def keep(self, upload_id: str, offset: int, hasher: hashlib._Hash) -> None:
        self._states[upload_id] = (offset, hasher)
        while len(self._states) > HASHERS_KEPT:
            self._states.popitem(last=False)

    def forget(self, upload_id: str) -> None:
        self._states.pop(upload_id, None)


class Uploads:
    def __init__(
        self, storage: BlobStore, metadata: RequestStore, max_blob_size: int | None
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._max_blob_size = max_blob_size
        self._hashers = _Hashers()

    async def start(self, name: str) -> Upload:
        # No object yet: the first chunk claimed becomes it.
        return await self._metadata.create_upload(uuid.uuid4().hex, name)

    async def get(self, name: str, upload_id: str) -> Upload:
        upload = None
        if keys.UPLOAD_ID_PATTERN.fullmatch(upload_id):
            upload = await self._metadata.get_upload(name, upload_id)
        if upload is None:
            raise BlobUploadUnknown({"upload": upload_id[:64]})
        return upload

    async def append(
        self,
        name: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        start: int | None = None,
        length: int | None = None,
    ) -> Upload:
        """Append a chunk. start, when given (Content-Range), must be the upload's offset; length,
        when given (Content-Length), must be the number of bytes that arrive."""
        upload = await self._at(name, upload_id, start)
        part = keys.upload_part(upload.id, uuid.uuid4().hex)
        try:
            claimed, hasher = await self._claim(upload, part, body, length)
            if claimed.offset > upload.offset:
                await self._add_part(upload, part)
        finally:
            await self._storage.delete(part)  # already gone when it was moved into place
        if hasher is not None:
            self._hashers.keep(claimed.id, claimed.offset, hasher)
        return claimed

    async def finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        start: int | None = None,
        length: int | None = None,
    ) -> int:
        """Append a last chunk (possibly empty), check the digest and make the blob readable in
        the repository. Returns the blob's size."""
        try:
            return await self._finish(name, upload_id, digest, body, start, length)
        except BlobUploadUnknown:
            size = await self._finished_before(name, upload_id, digest)
            if size is None:
                raise
            return size

    async def _finished_before(self, name: str, upload_id: str, digest: Digest) -> int | None:
        """A closing request that stored the blob and died before recording it, or that a
        concurrent one beat to it, leaves the session without bytes but the blob in place: a
        retried PUT completes it, but only when the session's own record proves that its bytes
        are that blob (the sha256 kept as they arrived covers all of them). A stored blob of the
        same size proves nothing: it may be another repository's, named by a caller who cannot
        read it and whose own bytes were something else."""
        upload = await self._metadata.get_upload(name, upload_id)
        if upload is None or upload.offset == 0 or not _hashed_as(upload, digest):
            return None
        async with reserved(self._metadata, digest, upload.offset) as reservation:
            # Checked under the reservation, so that no collector deletes the bytes afterwards.
            if not await self._is_stored(digest, upload.offset):
                await self._metadata.release_blob(reservation.token)
                return None
            await self._record(
                self._metadata.complete_upload(
                    upload.id, name, str(digest), upload.offset, reservation.token
                )
            )
        self._hashers.forget(upload.id)
        return upload.offset

    async def _is_stored(self, digest: Digest, size: int) -> bool:
        """Whether the blob of digest is in storage, whole and intact."""
        key = keys.blob(digest)
        try:
            if await self._storage.stat(key) != size:
                return False
        except NotFound:
            return False
        return await self._read_digest(key, digest.algorithm) == digest.encoded

    async def _finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        start: int | None,
        length: int | None,
    ) -> int:
        upload = await self._at(name, upload_id, start)
        if upload.offset == 0:
            # The whole blob came with this request (POST then PUT): it is checked and stored
            # from its own object, with no claim on the session, which ends either way.
            def complete(size: int, token: str) -> Awaitable[None]:
                return self._metadata.complete_upload(upload.id, name, str(digest), size, token)

            try:
                size = await self._whole(upload.id, digest, body, length, complete)
            except DigestInvalid:
                await self._forget(upload.id)  # as distribution does: the upload is over
                raise
            self._hashers.forget(upload.id)
            return size
        part = keys.upload_part(upload.id, uuid.uuid4().hex)
        content = part
        try:
            claimed, hasher = await self._claim(upload, part, body, length)
            if claimed.offset > upload.offset:
                await self._add_part(upload, part)
            content = await self._close(claimed)
            actual = await self._digest_of(claimed, hasher, content, digest.algorithm)
            if actual != digest.encoded:
                await self._forget(upload.id)  # as distribution does: the upload is over
                expected, actual = str(digest), f"{digest.algorithm}:{actual}"
                raise DigestInvalid({"expected": expected, "actual": actual})
            await self._store(
                content,
                digest,
                claimed.offset,
                lambda token: self._metadata.complete_upload(
                    upload.id, name, str(digest), claimed.offset, token
                ),
            )
        finally:
            await self._storage.delete(part)  # already gone when it became the blob
            if content != part:
                await self._storage.delete(content)
        self._hashers.forget(upload.id)
        return claimed.offset

    async def upload(
        self, name: str, digest: Digest, body: AsyncIterator[bytes], length: int | None
    ) -> int:
        """A whole blob in one request (POST ?digest=), with no upload session at all: nothing
        is left behind when the blob is refused. Returns the blob's size."""

        def link(size: int, token: str) -> Awaitable[None]:
            return self._metadata.link_blob(name, str(digest), size, token)

        return await self._whole(uuid.uuid4().hex, digest, body, length, link)

    async def _whole(
        self,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        length: int | None,
        record: Callable[[int, str], Awaitable[None]],
    ) -> int:
        """Receive a whole blob into an object of its own, check its digest, store it and
        record it with record(size, reservation)."""
        limit = self._max_blob_size
        if limit is not None and length is not None and length > limit:
            raise TooLarge({"limit": limit})
        part = keys.upload_part(upload_id, uuid.uuid4().hex)
        hasher = hashlib.sha256() if digest.algorithm == "sha256" else None
        try:
            size = await self._receive(part, 0, body, length, hasher)
            if size == 0:
                await (await self._storage.writer(part)).commit()
            if hasher is not None:
                actual = hasher.hexdigest()
            else:
                actual = await self._read_digest(part, digest.algorithm)
            if actual != digest.encoded:
                expected, actual = str(digest), f"{digest.algorithm}:{actual}"
                raise DigestInvalid({"expected": expected, "actual": actual})
            await self._store(part, digest, size, lambda token: record(size, token))
        finally:
            await self._storage.delete(part)  # already gone when it became the blob
        return size

    async def _store(
        self, content: str, digest: Digest, size: int, record: Callable[[str], Awaitable[None]]
    ) -> None:
        """Make checked bytes the blob of digest, unless the registry has that blob already,
        and record it with record(reservation): under a reservation, so that no collector
        deletes the bytes before the record makes them reachable."""
        async with reserved(self._metadata, digest, size) as reservation:
            if not reservation.stored:
                await self._storage.move(content, keys.blob(digest))
            await self._record(record(reservation.token))

    @staticmethod
    async def _record(recording: Awaitable[None]) -> None:
        try:
            await recording
        except Conflict:
            # The reservation ended: the bytes took longer than upload_expiry to be stored.
            raise BlobUploadInvalid(
                {"reason": "storing the blob took too long; start again"}
            ) from None

    # Concurrent requests on one upload (a client's mistake, or an attempt to store other bytes
    # under a digest) must never leave bytes in it that its kept hash does not cover. So a chunk
    # is received into an object of its own, its range claimed in metadata (one request wins),
    # and only then added to the upload's bytes; and a closing request takes those bytes away
    # under a key of its own before it checks them, so that no chunk claimed later lands there.

    async def _at(self, name: str, upload_id: str, start: int | None) -> Upload:
        upload = await self.get(name, upload_id)
        if start is not None and start != upload.offset:
            # spec: "If a chunk is uploaded out of order, the registry MUST respond with a 416"
            raise UploadOutOfOrder({"offset": upload.offset, "start": start})
        await self._settle(upload)
        return upload

    async def _settle(self, upload: Upload) -> None:
        """Complete the last claimed chunk if the request that claimed it died before adding it
        to the upload's bytes: the chunk was durable before it was claimed, so nothing the client
        was told about is lost. Adding it twice writes the same bytes at the same place."""
        if upload.part is None:
            return
        try:
            size = await self._storage.stat(keys.upload(upload.id))
        except NotFound:
            size = 0
        if size == upload.offset:
            return
        try:
            part_size = await self._storage.stat(upload.part)
        except NotFound:
            # Neither in place nor pending: a concurrent request is closing the upload.
            raise BlobUploadUnknown({"upload": upload.id}) from None
        part_offset = upload.offset - part_size
        # Anything between part_offset and offset is what a dead request had copied of the part.
        if size < part_offset:
            raise BlobUploadInvalid({"reason": "upload data lost; start again"})
        settling = Upload(**{**asdict(upload), "offset": part_offset})
        await self._add_part(settling, upload.part)
        await self._storage.delete(upload.part)

    async def _claim(
        self, upload: Upload, part: str, body: AsyncIterator[bytes], length: int | None
    ) -> tuple[Upload, hashlib._Hash | None]:
        """Receive a chunk into part, then claim its range: the upload as advanced, and the
        sha256 state of its bytes when this process has it."""
        limit = self._max_blob_size
        if limit is not None and length is not None and upload.offset + length > limit:
            raise TooLarge({"limit": limit})
        hasher = self._hashers.take(upload.id, upload.offset)
        received = await self._receive(part, upload.offset, body, length, hasher)
        if received == 0:
            return upload, hasher
        try:
            advanced = await self._metadata.advance_upload(
                upload.id,
                upload.offset,
                upload.offset + received,
                hasher.copy().hexdigest() if hasher is not None else None,
                part,
            )
        except Conflict:
            raise UploadOutOfOrder({"reason": "a concurrent request moved the upload"}) from None
        return advanced, hasher

    async def _receive(
        self,
        part: str,
        offset: int,
        body: AsyncIterator[bytes],
        length: int | None,
        hasher: hashlib._Hash | None,
    ) -> int:
        """Write body to part, durably; the number of bytes received. No object for no bytes.

        The server reads the socket only while the app awaits the body, so bytes are gathered in
        batches that are hashed and written while the next batch arrives, not in turn with it."""
        limit = self._max_blob_size
        writer = None
        received = 0
        batch: list[bytes] = []
        batched = 0
        absorbing: asyncio.Future[None] | None = None
        try:
            async for chunk in body:
                received += len(chunk)
                if limit is not None and offset + received > limit:
                    raise TooLarge({"limit": limit})
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH_BYTES:
                    writer = writer or await self._storage.writer(part)
                    if absorbing is not None:
                        await absorbing
                    absorbing = asyncio.ensure_future(_absorb(writer, hasher, b"".join(batch)))
                    batch, batched = [], 0
            if length is not None and received != length:
                raise SizeInvalid({"expected": length, "received": received})
            if absorbing is not None:
                await absorbing
            if batched:
                writer = writer or await self._storage.writer(part)
                await _absorb(writer, hasher, b"".join(batch))
        except BaseException:
            if absorbing is not None:
                absorbing.cancel()
                with contextlib.suppress(BaseException):
                    await absorbing
            if writer is not None:
                await writer.cancel()
            raise
        if writer is not None:
            await writer.commit()
        return received

    async def _add_part(self, upload: Upload, part: str) -> None:
        """Put a claimed chunk after the upload's bytes: the first simply becomes them, later ones
        are copied onto the end."""
        if upload.offset == 0:
            try:
                await self._storage.move(part, keys.upload(upload.id))
            except NotFound:
                # Settled by a later request while this one was between claim and move.
                await self._storage.stat(keys.upload(upload.id))
            return
        try:
            writer = await self._storage.writer(keys.upload(upload.id), upload.offset)
        except NotFound:
            # A chunk claimed before this one has not landed yet (requests sent concurrently).
            raise BlobUploadInvalid({"reason": "upload data lost; start again"}) from None
        try:
            async for chunk in self._storage.read(part):
                await writer.write(chunk)
        except BaseException:
            await writer.close()
            raise
        await writer.commit()

    async def _close(self, upload: Upload) -> str:
        """Take the upload's bytes under a key of this request's own and check that they are all
        the chunks claimed; the key."""
        closing = keys.upload_part(upload.id, uuid.uuid4().hex)
        try:
            await self._storage.move(keys.upload(upload.id), closing)
        except NotFound:
            if upload.offset != 0:  # finished or cancelled by a concurrent request
                raise BlobUploadUnknown({"upload": upload.id}) from None
            # No chunk ever came: an empty blob.
            writer = await self._storage.writer(closing)
            await writer.commit()
        try:
            current = await self._metadata.get_upload(upload.repository, upload.id)
            if current is None:
                raise BlobUploadUnknown({"upload": upload.id})
            if (
                current.offset != upload.offset
                or await self._storage.stat(closing) != upload.offset
            ):
                await self._forget(upload.id)
                raise BlobUploadInvalid(
                    {"reason": "concurrent requests on the upload; start again"}
                )
        except BaseException:
            await self._storage.delete(closing)
            raise
        return closing

    async def _digest_of(
        self, upload: Upload, hasher: hashlib._Hash | None, key: str, algorithm: str
    ) -> str:
        """The digest of the upload's bytes, stored under key: from the hash kept while they
        arrived when there is one, else read back."""
        if algorithm == "sha256":
            if hasher is not None:
                return hasher.hexdigest()
            if upload.hashed_digest and upload.hashed_offset == upload.offset:
                return upload.hashed_digest
        return await self._read_digest(key, algorithm)

    async def _read_digest(self, key: str, algorithm: str) -> str:
        hasher = hashlib.new(algorithm)
        async for chunk in self._storage.read(key):
            hasher.update(chunk)
        return hasher.hexdigest()

    async def cancel(self, name: str, upload_id: str) -> None:
        upload = await self.get(name, upload_id)
        await self._forget(upload.id)
        await self._storage.delete(keys.upload(upload.id))

    async def _forget(self, upload_id: str) -> None:
        await self._metadata.delete_upload(upload_id)
        self._hashers.forget(upload_id)

    async def mount(self, name: str, digest: Digest, source: str) -> int | None:
        """Link a blob readable in source into name; None when source cannot read it."""
        return await self._metadata.mount_blob(name, str(digest), source)


def _hashed_as(upload: Upload, digest: Digest) -> bool:
    """Whether the upload's recorded sha256, kept over all its bytes, is digest."""
    return (
        digest.algorithm == "sha256"
        and upload.hashed_digest == digest.encoded
        and upload.hashed_offset == upload.offset
    )
