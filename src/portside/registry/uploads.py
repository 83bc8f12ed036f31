"""Blob upload sessions: start, append chunks, finish with a digest, cancel, mount.

An upload's bytes live in the blob store under keys.upload(id) from its first chunk on, its offset
in metadata, so any worker process (or, on shared storage, any instance) can take the next
request. Chunks are written straight onto those bytes, by one request at a time (upload_lock.py):
holding the upload's lock, a request opens the bytes at the recorded offset (dropping whatever a
request that died mid-chunk left past it), appends its chunk while hashing it, makes it durable,
and only then advances the offset. So the bytes up to the recorded offset are always the ones
acknowledged, and two racing requests never mix theirs: the second is refused (416) at once.

The sha256 state of an upload is kept in this process only as a shortcut: when the next chunk
lands elsewhere, the digest is recomputed from the stored bytes.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from typing import Final, Protocol

from portside.metadata.base import (
    QUIET,
    Claim,
    Conflict,
    Journal,
    LeaseStore,
    RequestStore,
    Upload,
)
from portside.registry import keys
from portside.registry.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    UploadOutOfOrder,
)
from portside.registry.events import BLOB_MEDIA_TYPE, Action, Origin, Recorder, Target
from portside.registry.ingest import check_digest, ingest, read_digest, receive, store
from portside.registry.names import Digest
from portside.registry.quotas import Quotas
from portside.registry.reservations import reserved
from portside.registry.upload_lock import Held, UploadLocks
from portside.storage.base import BlobStore, NotFound

HASHERS_KEPT: Final = 256


class UploadStore(RequestStore, LeaseStore, Protocol):
    """The request path, and leases for the upload locks of blob stores without local files."""


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


async def _renewing(body: AsyncIterator[bytes], held: Held) -> AsyncIterator[bytes]:
    async for chunk in body:
        await held.renew()
        yield chunk


class Uploads:
    def __init__(
        self,
        storage: BlobStore,
        metadata: UploadStore,
        max_blob_size: int | None,
        recorder: Recorder | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._max_blob_size = max_blob_size
        self._recorder = recorder or Recorder()
        self._quotas = quotas
        self._hashers = _Hashers()
        self._locks = UploadLocks(storage, metadata)

    async def start(self, name: str) -> Upload:
        # No object yet: the first chunk makes it.
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
        if length is not None:
            await self._check_quota(name, upload.offset + length)
        async with self._locks.hold(upload.id) as held:
            upload = await self._current(upload, start)
            hasher = self._hashers.take(upload.id, upload.offset)
            received = await self._write(upload, held, body, length, hasher)
            advanced = upload
            if received:
                try:
                    advanced = await self._metadata.advance_upload(
                        upload.id,
                        upload.offset,
                        upload.offset + received,
                        hasher.copy().hexdigest() if hasher is not None else None,
                    )
                except Conflict:
                    # Ended meanwhile (cancelled, or finished by a request with the whole blob):
                    # the bytes written belong to no session, and go with the next collection.
                    raise BlobUploadUnknown({"upload": upload.id}) from None
        if hasher is not None:
            self._hashers.keep(advanced.id, advanced.offset, hasher)
        return advanced

    async def finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        start: int | None = None,
        length: int | None = None,
        origin: Origin | None = None,
    ) -> int:
        """Append a last chunk (possibly empty), check the digest and make the blob readable in
        the repository. Returns the blob's size."""
        try:
            return await self._finish(name, upload_id, digest, body, start, length, origin)
        except BlobUploadUnknown:
            size = await self._finished_before(name, upload_id, digest, origin)
            if size is None:
                raise
            return size

    async def _finished_before(
        self, name: str, upload_id: str, digest: Digest, origin: Origin | None
    ) -> int | None:
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
            journal = self._pushed(name, digest, upload.offset, origin)
            await _recorded(
                self._metadata.complete_upload(
                    upload.id, name, str(digest), upload.offset, reservation.token, journal
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
        return await read_digest(self._storage, key, digest.algorithm) == digest.encoded

    async def _finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        start: int | None,
        length: int | None,
        origin: Origin | None,
    ) -> int:
        upload = await self._at(name, upload_id, start)
        if upload.offset == 0:
            # The whole blob came with this request (POST then PUT): it is checked and stored
            # from an object of its own, with no lock on the session, which ends either way.
            async def complete(size: int, token: Claim) -> None:
                await self._check_quota(name, size, digest)
                journal = self._pushed(name, digest, size, origin)
                await _recorded(
                    self._metadata.complete_upload(
                        upload.id, name, str(digest), size, token, journal
                    )
                )

            try:
                size = await ingest(
                    self._storage,
                    self._metadata,
                    digest,
                    body,
                    complete,
                    length,
                    self._max_blob_size,
                    owner=upload.id,
                )
            except DigestInvalid:
                await self._forget(upload.id)  # as distribution does: the upload is over
                raise
            self._hashers.forget(upload.id)
            return size
        key = keys.upload(upload.id)
        async with self._locks.hold(upload.id) as held:
            upload = await self._current(upload, start)
            hasher = self._hashers.take(upload.id, upload.offset)
            received = await self._write(upload, held, body, length, hasher)
            size = upload.offset + received
            try:
                check_digest(digest, await self._digest_of(upload, received, hasher, digest))
            except DigestInvalid:
                await self._forget(upload.id)  # as distribution does: the upload is over
                await self._storage.delete(key)
                raise
            await self._check_quota(name, size, digest)
            await store(
                self._metadata,
                digest,
                size,
                lambda: self._storage.move(key, keys.blob(digest)),
                lambda token: _recorded(
                    self._metadata.complete_upload(
                        upload.id,
                        name,
                        str(digest),
                        size,
                        token,
                        self._pushed(name, digest, size, origin),
                    )
                ),
            )
            await self._storage.delete(key)  # already gone when it became the blob
        self._hashers.forget(upload.id)
        return size

    async def upload(
        self,
        name: str,
        digest: Digest,
        body: AsyncIterator[bytes],
        length: int | None,
        origin: Origin | None = None,
    ) -> int:
        """A whole blob in one request (POST ?digest=), with no upload session at all: nothing
        is left behind when the blob is refused. Returns the blob's size."""

        if length is not None:
            await self._check_quota(name, length, digest)

        async def link(size: int, token: Claim) -> None:
            if length is None:
                await self._check_quota(name, size, digest)
            journal = self._pushed(name, digest, size, origin)
            await _recorded(self._metadata.link_blob(name, str(digest), size, token, journal))

        return await ingest(
            self._storage, self._metadata, digest, body, link, length, self._max_blob_size
        )

    async def _at(self, name: str, upload_id: str, start: int | None) -> Upload:
        upload = await self.get(name, upload_id)
        if start is not None and start != upload.offset:
            # spec: "If a chunk is uploaded out of order, the registry MUST respond with a 416"
            raise UploadOutOfOrder({"offset": upload.offset, "start": start})
        return upload

    async def _current(self, upload: Upload, start: int | None) -> Upload:
        """The upload as it stands once this request holds its lock. Bytes are durable before
        the offset moves past them and the offset never moves back, so when the bytes end at
        the offset read before the lock, that offset is still the upload's; else (a request ran
        in between, or one died mid-chunk leaving bytes past the offset) it is read again."""
        try:
            size = await self._storage.stat(keys.upload(upload.id))
        except NotFound:
            size = 0
        if size == upload.offset:
            return upload
        return await self._at(upload.repository, upload.id, start)

    async def _write(
        self,
        upload: Upload,
        held: Held,
        body: AsyncIterator[bytes],
        length: int | None,
        hasher: hashlib._Hash | None,
    ) -> int:
        """Append body to the upload's bytes at its offset, durably; the number of bytes."""
        try:
            writer = await self._storage.writer(keys.upload(upload.id), upload.offset)
        except NotFound:
            # Taken away by a request closing the upload (the bytes became the blob).
            raise BlobUploadUnknown({"upload": upload.id}) from None
        try:
            received = await receive(
                writer, _renewing(body, held), hasher, length, self._max_blob_size
            )
            if received:
                await held.confirm()
        except BaseException:
            # What reached the object past the offset is dropped by the next writer.
            await writer.close()
            raise
        if received:
            await writer.commit()
        else:
            await writer.close()
        return received

    async def _digest_of(
        self, upload: Upload, received: int, hasher: hashlib._Hash | None, digest: Digest
    ) -> str:
        """The digest of the upload's bytes: from the hash kept while they arrived when there is
        one, else read back."""
        if digest.algorithm == "sha256":
            if hasher is not None:
                return hasher.hexdigest()
            if not received and _hashed_as(upload, digest):
                return digest.encoded
        return await read_digest(self._storage, keys.upload(upload.id), digest.algorithm)

    async def cancel(self, name: str, upload_id: str) -> None:
        upload = await self.get(name, upload_id)
        await self._forget(upload.id)
        await self._storage.delete(keys.upload(upload.id))

    async def _forget(self, upload_id: str) -> None:
        await self._metadata.delete_upload(upload_id)
        self._hashers.forget(upload_id)

    async def mount(
        self, name: str, digest: Digest, source: str, origin: Origin | None = None
    ) -> int | None:
        """Link a blob readable in source into name; None when source cannot read it."""
        if self._quotas is not None:
            size = await self._metadata.linked_blob_size(source, str(digest))
            if size is None:
                return None
            await self._check_quota(name, size, digest)
        journal = QUIET
        if self._recorder.active:
            # Its size, for the event, read first: the mount's transaction is the store's.
            size = await self._metadata.linked_blob_size(source, str(digest))
            if size is None:
                return None
            target = Target(
                name, str(digest), BLOB_MEDIA_TYPE, size, from_repository=source, blob=True
            )
            journal = self._recorder.journal(Action.MOUNT, target, origin, {"from": source})
        return await self._metadata.mount_blob(name, str(digest), source, journal)

    async def _check_quota(self, name: str, size: int, digest: Digest | None = None) -> None:
        if self._quotas is not None:
            await self._quotas.check_blob(name, size, None if digest is None else str(digest))

    def _pushed(self, name: str, digest: Digest, size: int, origin: Origin | None) -> Journal:
        """The journal of a blob's push: events only, as the manifest's push is audited."""
        target = Target(name, str(digest), BLOB_MEDIA_TYPE, size, blob=True)
        return self._recorder.journal(Action.PUSH, target, origin, audited=False)


async def _recorded(recording: Awaitable[None]) -> None:
    try:
        await recording
    except Conflict:
        # The reservation ended: the bytes took longer than upload_expiry to be stored.
        raise BlobUploadInvalid({"reason": "storing the blob took too long; start again"}) from None


def _hashed_as(upload: Upload, digest: Digest) -> bool:
    """Whether the upload's recorded sha256, kept over all its bytes, is digest."""
    return (
        digest.algorithm == "sha256"
        and upload.hashed_digest == digest.encoded
        and upload.hashed_offset == upload.offset
    )
