"""A distribution tree in an S3 bucket, as distribution's s3 driver writes it (its `bucket` and
`rootdirectory`): listed once when opened, then read by object. Into Portside's own S3 store on
the same server, a blob goes by a server-side copy (CopyObject, or UploadPartCopy above 5 GiB):
its bytes never pass through this process on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NamedTuple

from anyio import to_thread
from botocore.exceptions import ClientError

from portside.registry.distribution_tree import V2, Placement
from portside.storage.base import BlobStore, NotFound
from portside.storage.s3 import S3BlobStore
from portside.storage.s3_bucket import MAX_COPY, MISSING, Bucket, error_code

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


class _Object(NamedTuple):
    size: int
    etag: str


class BucketSource:
    """A tree under root (distribution's rootdirectory, or its v2 folder) in bucket."""

    def __init__(self, client: S3Client, bucket: str, root: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.endpoint = client.meta.endpoint_url
        self._bucket = Bucket(client, bucket, encrypt=False, copy_part_size=MAX_COPY // 2)
        root = root.strip("/")
        listed = self._list(f"{root}/" if root else "")
        # Where the v2 folder is: under root, or root itself.
        v2 = f"{root}/{V2}/".lstrip("/")
        self.prefix = v2 if any(name.startswith(v2) for name in listed) else f"{root}/".lstrip("/")
        self._files: dict[str, _Object] = {}
        self._folders: dict[str, set[str]] = {}
        for name, found in listed.items():
            if not name.startswith(self.prefix):
                continue
            path = name[len(self.prefix) :]
            self._files[path] = found
            parts = path.split("/")
            for depth in range(len(parts) - 1):
                self._folders.setdefault("/".join(parts[:depth]), set()).add(parts[depth])

    def _list(self, prefix: str) -> dict[str, _Object]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return {
            item["Key"]: _Object(item["Size"], item["ETag"])
            for page in pages
            for item in page.get("Contents", [])
        }

    def where(self, path: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{path}"

    def folders(self, path: str) -> list[str]:
        return sorted(self._folders.get(path, ()))

    def size(self, path: str) -> int | None:
        found = self._files.get(path)
        return None if found is None else found.size

    def read(self, path: str) -> bytes:
        if path not in self._files:
            raise NotFound(self.where(path))
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + path)
        except ClientError as error:
            if error_code(error) in MISSING:
                raise NotFound(self.where(path)) from None
            raise
        with response["Body"] as body:
            return body.read()

    async def open(self, path: str) -> AsyncIterator[bytes]:
        found = self._files.get(path)
        if found is None:
            raise NotFound(self.where(path))
        if found.size == 0:
            return
        try:
            # The version listed, as place() copies it: what is checked is what is copied.
            body = await self._bucket.open(self.prefix + path, "bytes=0-", found.etag)
        except ClientError as error:
            if error_code(error) in MISSING | {"PreconditionFailed"}:
                raise NotFound(self.where(path)) from None
            raise
        async for chunk in Bucket.chunks(body):
            yield chunk

    async def digest(self, path: str, algorithm: str) -> str:
        hasher = hashlib.new(algorithm)
        async for chunk in self.open(path):
            await to_thread.run_sync(hasher.update, chunk)
        return hasher.hexdigest()

    def _same_server(self, storage: BlobStore) -> S3BlobStore | None:
        """storage, if it is a bucket of this tree's server: one a server-side copy reaches."""
        if isinstance(storage, S3BlobStore) and storage.endpoint == self.endpoint:
            return storage
        return None

    def copies_as_read(self, storage: BlobStore) -> bool:
        """Into a bucket of the same server: place() and open() both take the version listed
        (CopySourceIfMatch and IfMatch its ETag)."""
        return self._same_server(storage) is not None

    async def place(self, path: str, storage: BlobStore, key: str) -> Placement | None:
        """A server-side copy when storage is a bucket of the same server; the bytes copied are
        those listed (CopySourceIfMatch their ETag)."""
        bucket = self._same_server(storage)
        if bucket is None:
            return None
        found = self._files.get(path)
        if found is None:
            raise NotFound(self.where(path))
        try:
            await bucket.copy_in(self.bucket, self.prefix + path, found.etag, found.size, key)
        except ClientError as error:
            if error_code(error) in MISSING | {"PreconditionFailed"}:
                raise NotFound(self.where(path)) from None
            raise
        return Placement.SERVER_SIDE
