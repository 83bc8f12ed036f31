"""Blob upload sessions: start, append chunks, finish with a digest, cancel, mount.

An upload's bytes live in the blob store under keys.upload(id), its offset in metadata, so any
worker process (or, on shared storage, any instance) can take the next request. The sha256 state
of an upload is kept in this process only as a shortcut: when the next chunk lands elsewhere, the
digest is recomputed from the stored bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Final

from portside.metadata.base import Conflict, MetadataStore, Upload
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
from portside.storage.base import BlobStore, NotFound

HASHERS_KEPT: Final = 256


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
        self, storage: BlobStore, metadata: MetadataStore, max_blob_size: int | None
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._max_blob_size = max_blob_size
        self._hashers = _Hashers()

    async def start(self, name: str) -> Upload:
        upload_id = uuid.uuid4().hex
        # An empty object from the start: a status request or a PUT with no PATCH finds it.
        writer = await self._storage.writer(keys.upload(upload_id))
        await writer.close()
        return await self._metadata.create_upload(upload_id, name)

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
        upload = await self.get(name, upload_id)
        if start is not None and start != upload.offset:
            # spec: "If a chunk is uploaded out of order, the registry MUST respond with a 416"
            raise UploadOutOfOrder({"offset": upload.offset, "start": start})
        return await self._append(upload, body, length)

    async def _append(
        self, upload: Upload, body: AsyncIterator[bytes], length: int | None
    ) -> Upload:
        limit = self._max_blob_size
        if limit is not None and length is not None and upload.offset + length > limit:
            raise TooLarge({"limit": limit})
        try:
            writer = await self._storage.writer(keys.upload(upload.id), upload.offset)
        except NotFound:
            raise BlobUploadInvalid({"reason": "upload data lost; start again"}) from None
        hasher = self._hashers.take(upload.id, upload.offset)
        received = 0
        try:
            async for chunk in body:
                received += len(chunk)
                if limit is not None and upload.offset + received > limit:
                    raise TooLarge({"limit": limit})
                await writer.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
            if length is not None and received != length:
                raise SizeInvalid({"expected": length, "received": received})
        except BaseException:
            # Keep nothing of a failed chunk: the next attempt resumes at the recorded offset.
            await writer.close()
            raise
        await writer.commit()
        if received == 0:
            if hasher is not None:
                self._hashers.keep(upload.id, upload.offset, hasher)
            return upload
        offset = upload.offset + received
        try:
            advanced = await self._metadata.advance_upload(
                upload.id,
                upload.offset,
                offset,
                hasher.copy().hexdigest() if hasher is not None else None,
            )
        except Conflict:
            raise UploadOutOfOrder({"reason": "a concurrent request moved the upload"}) from None
        if hasher is not None:
            self._hashers.keep(upload.id, offset, hasher)
        return advanced

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
        upload = await self.append(name, upload_id, body, start, length)
        actual = await self._digest_of(upload, digest.algorithm)
        if actual != digest.encoded:
            await self.cancel(name, upload_id)
            raise DigestInvalid({"expected": str(digest), "actual": f"{digest.algorithm}:{actual}"})
        key = keys.blob(digest)
        if await self._metadata.blob_size(str(digest)) is None:
            await self._storage.move(keys.upload(upload.id), key)
        else:
            await self._storage.delete(keys.upload(upload.id))
        await self._metadata.link_blob(name, str(digest), upload.offset)
        await self._metadata.delete_upload(upload.id)
        self._hashers.forget(upload.id)
        return upload.offset

    async def upload(
        self, name: str, digest: Digest, body: AsyncIterator[bytes], length: int | None
    ) -> int:
        """A whole blob in one request (POST ?digest=): an upload session no client can see,
        so none is left behind when the blob is refused. Returns the blob's size."""
        upload = await self.start(name)
        try:
            return await self.finish(name, upload.id, digest, body, length=length)
        except BaseException:
            with contextlib.suppress(BlobUploadUnknown):  # finish cancels on DigestInvalid
                await self.cancel(name, upload.id)
            raise

    async def _digest_of(self, upload: Upload, algorithm: str) -> str:
        if algorithm == "sha256":
            hasher = self._hashers.take(upload.id, upload.offset)
            if hasher is not None:
                return hasher.hexdigest()
            if upload.hashed_digest and upload.hashed_offset == upload.offset:
                return upload.hashed_digest
        hasher = hashlib.new(algorithm)
        async for chunk in self._storage.read(keys.upload(upload.id)):
            hasher.update(chunk)
        return hasher.hexdigest()

    async def cancel(self, name: str, upload_id: str) -> None:
        upload = await self.get(name, upload_id)
        await self._metadata.delete_upload(upload.id)
        await self._storage.delete(keys.upload(upload.id))
        self._hashers.forget(upload.id)

    async def mount(self, name: str, digest: Digest, source: str) -> int | None:
        """Link a blob readable in source into name; None when source cannot read it."""
        size = await self._metadata.linked_blob_size(source, str(digest))
        if size is None:
            return None
        await self._metadata.link_blob(name, str(digest), size)
        return size
