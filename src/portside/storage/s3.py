"""Blobs as objects in an S3-compatible bucket (AWS S3, Ceph RGW, MinIO) under a key prefix.

Keys map to objects named prefix + key. A writer leaves an unfinished object that any process
can continue, read or move: how is in s3_unfinished.py; the calls to the bucket are in
s3_bucket.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from botocore.exceptions import ClientError

from portside.storage.base import KEY_PATTERN, NotFound, ObjectInfo, check_key
from portside.storage.s3_bucket import (
    MAX_COPY,
    MAX_PARTS,
    MIN_PART,
    MISSING,
    Bucket,
    MiB,
    error_code,
    make_client,
)
from portside.storage.s3_unfinished import (
    PARTS_PER_STEP,
    TAIL,
    S3Writer,
    UnfinishedObjects,
)

__all__ = ["TAIL", "S3BlobStore"]


class S3BlobStore:
    """Keys map to objects named prefix + key in one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool = True,
        path_style: bool = True,
        part_size: int = 8 * MiB,
        encrypt: bool = False,
        copy_part_size: int = 256 * MiB,
        max_copy_size: int = MAX_COPY,
    ) -> None:
        """Credentials and region not given come from boto3's usual chain (environment, profile,
        instance role). prefix is a folder-like prefix: `registry` or `/registry/` names objects
        `registry/<key>`. encrypt has S3 encrypt what it stores with its own keys (SSE-S3,
        AES256). part_size, copy_part_size and max_copy_size are for tests and tuning."""
        if not bucket:
            raise ValueError("an S3 bucket is required")
        if (access_key is None) != (secret_key is None):
            raise ValueError("give the S3 access key and secret key together")
        if not MIN_PART <= part_size <= MAX_COPY // (MAX_PARTS // PARTS_PER_STEP):
            raise ValueError(f"part_size must be between 5 MiB and 512 MiB, got {part_size}")
        if not MIN_PART <= copy_part_size <= MAX_COPY // 2:
            raise ValueError(f"copy_part_size must be between 5 MiB and 2.5 GiB: {copy_part_size}")
        if not MIN_PART <= max_copy_size <= MAX_COPY:
            raise ValueError(f"max_copy_size must be between 5 MiB and 5 GiB: {max_copy_size}")
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self._max_copy_size = max_copy_size
        self.client = make_client(
            endpoint_url=endpoint_url,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            path_style=path_style,
        )
        self.endpoint = self.client.meta.endpoint_url
        self._bucket = Bucket(self.client, bucket, encrypt=encrypt, copy_part_size=copy_part_size)
        self._unfinished = UnfinishedObjects(self._bucket, part_size)

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def stat(self, key: str) -> int:
        name = self._name(key)
        found = await self._bucket.head(name)
        if found is not None:
            return found.size
        unfinished = await self._unfinished.find(name)
        if unfinished is None:
            raise NotFound(key)
        return unfinished.size

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        name = self._name(key)
        if offset < 0:
            raise ValueError(f"negative offset: {offset}")
        if length == 0:
            await self.stat(key)
            return
        # A range on every request: S3 answers 416 for one that starts at or past the end.
        byte_range = f"bytes={offset}-{'' if length is None else offset + length - 1}"
        try:
            body = await self._bucket.open(name, byte_range)
        except ClientError as error:
            if error_code(error) not in MISSING:
                raise
            try:
                settled = await self._unfinished.settle(name)
                body = await self._bucket.open(settled, byte_range)
            except (NotFound, ClientError) as again:
                if isinstance(again, ClientError) and error_code(again) not in MISSING:
                    raise
                raise NotFound(key) from None
        async for chunk in Bucket.chunks(body):
            yield chunk

    async def get(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    async def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        # At once, not in turn: a finished object is read before any unfinished one under its
        # name, so whichever lands first, readers see the old object or the new.
        outcomes = await asyncio.gather(
            self._bucket.put(name, data), self._unfinished.drop(name), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def writer(self, key: str, offset: int = 0) -> S3Writer:
        """Continues from the bucket alone: any offset up to the size works (see
        s3_unfinished.py for what each costs)."""
        name = self._name(key)
        if offset < 0:
            raise ValueError(f"negative offset: {offset}")
        if offset == 0:
            return await self._unfinished.new_writer(name)
        found = await self._bucket.head(name)
        if found is None:
            unfinished = await self._unfinished.find(name)
            if unfinished is None or unfinished.size < offset:
                raise NotFound(f"{key} is shorter than {offset}")
            return await self._unfinished.continue_writer(name, unfinished, offset)
        if found.size < offset:
            raise NotFound(f"{key} is shorter than {offset}")
        return await self._unfinished.finished_writer(name, found.etag, offset)

    async def move(self, src: str, dst: str) -> None:
        """CopyObject, or a multipart copy above max_copy_size (both appear whole or not at
        all), then delete src. Not a rename: a crash in between leaves both."""
        source, target = self._name(src), self._name(dst)
        if source == target:
            await self.stat(src)
            return
        found = await self._bucket.head(source)
        if found is None:
            try:
                source = await self._unfinished.settle(source)
            except NotFound:
                raise NotFound(src) from None
            found = await self._bucket.head(source)
            if found is None:
                raise NotFound(src)
        try:
            await self._bucket.copy(source, found.etag, target, found.size, self._max_copy_size)
        except ClientError as error:
            if error_code(error) not in MISSING:
                raise
            raise NotFound(src) from None  # moved or deleted meanwhile by another request
        await self._unfinished.drop(target)
        await self._unfinished.discard(self._name(src))

    async def copy_in(self, bucket: str, name: str, etag: str, size: int, key: str) -> None:
        """Copy the object name (of size bytes, still at etag) of bucket, on this store's
        server, to key, server-side: CopyObject, or a multipart copy above max_copy_size.
        ClientError (PreconditionFailed, NoSuchKey, AccessDenied) if it cannot be read."""
        target = self._name(key)
        await self._bucket.copy(name, etag, target, size, self._max_copy_size, bucket)
        await self._unfinished.drop(target)

    async def delete(self, key: str) -> None:
        """Objects under key, finished or not, and their multipart uploads, open or abandoned."""
        name = self._name(key)
        batch = [name, name + TAIL]
        async for found, _, _ in self._bucket.names(name + "/"):
            batch.append(found)
            if len(batch) == 1000:
                await self._bucket.delete(batch)
                batch = []
        await self._bucket.delete(batch)
        await self._bucket.abort_uploads(name, under=True)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        try:
            await self.stat(prefix)
        except NotFound:
            pass
        else:
            yield prefix
        async for name, _, _ in self._bucket.names(self._name(prefix) + "/"):
            key = name[len(self.prefix) :]
            if KEY_PATTERN.fullmatch(key):
                yield key
            elif (
                name.endswith(TAIL)
                and KEY_PATTERN.fullmatch(key.removesuffix(TAIL))
                and await self._bucket.head(name.removesuffix(TAIL)) is None
            ):
                yield key.removesuffix(TAIL)  # unfinished, and not beside a finished one

    async def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """The listing gives each finished object's size and time; an unfinished one's size is
        in its tail's metadata, its time the tail's."""
        if (found := await self._bucket.head(self._name(prefix))) is not None:
            yield ObjectInfo(prefix, found.size, found.modified)
        finished: set[str] = set()
        tails: dict[str, datetime] = {}
        async for name, size, modified in self._bucket.names(self._name(prefix) + "/"):
            key = name[len(self.prefix) :]
            if KEY_PATTERN.fullmatch(key):
                finished.add(key)
                yield ObjectInfo(key, size, modified)
            elif key.endswith(TAIL) and KEY_PATTERN.fullmatch(key.removesuffix(TAIL)):
                tails[key.removesuffix(TAIL)] = modified
        for key, modified in tails.items():
            if (
                key not in finished
                and (unfinished := await self._unfinished.find(self.prefix + key)) is not None
            ):
                yield ObjectInfo(key, unfinished.size, modified)

    def local_path(self, key: str) -> Path | None:
        check_key(key)
        return None

    def redirect_url(self, key: str, expires: int) -> str:
        return self.presigned_url(key, expires)

    def presigned_url(self, key: str, expires: int = 3600) -> str:
        """A URL that GETs the finished object under key for expires seconds, no credentials
        needed (for `storage_redirect`). Signed locally: no request, no check that it exists."""
        return self._bucket.presigned_url(self._name(key), expires)
