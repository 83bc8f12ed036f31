"""One S3 bucket, spoken to by object name: the client, and the calls the S3 driver makes, each
run in a worker thread. boto3 rather than aiobotocore: its clients are thread-safe and well kept,
where aiobotocore pins botocore to one release.

Nothing here knows of keys, tails or unfinished objects; see s3_unfinished.py and s3.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Final, NamedTuple, TypedDict, TypeVar

import anyio
from anyio import to_thread

from portside.storage.base import StorageError

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError("storage: s3 needs boto3: pip install 'portside[s3]'") from error

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import ServerSideEncryptionType
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        GetObjectOutputTypeDef,
        ObjectIdentifierTypeDef,
        PartTypeDef,
    )

T = TypeVar("T")
P = TypeVar("P")

MiB: Final = 1024 * 1024
READ_CHUNK: Final = MiB  # of a GET's body at a time
GiB: Final = 1024 * MiB
MIN_PART: Final = 5 * MiB  # S3's smallest part, but for the last one
MAX_PARTS: Final = 10_000
MAX_COPY: Final = 5 * GiB  # S3's largest CopyObject, and largest part
COPY_CONCURRENCY: Final = 8
MAX_CONNECTIONS: Final = 40  # anyio's default number of worker threads
MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})
UPLOAD_GONE: Final = frozenset({"NoSuchUpload", "NoSuchKey", "404"})  # RGW says NoSuchKey


class _Encryption(TypedDict, total=False):
    """What every call that makes an object (or the upload that becomes one) carries."""

    ServerSideEncryption: ServerSideEncryptionType


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _ranges(size: int, piece: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering size bytes, each piece long but the last, which takes the
    remainder (so every range is at least min(size, piece) long)."""
    count = max(1, size // piece)
    return [(i * piece, size if i == count - 1 else (i + 1) * piece) for i in range(count)]


def make_client(
    *,
    endpoint_url: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
    secure: bool,
    path_style: bool,
) -> S3Client:
    """Credentials and region not given come from boto3's usual chain (environment, profile,
    instance role)."""
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
    )
    config = Config(
        s3={"addressing_style": "path" if path_style else "virtual"},
        # boto3 1.36 began sending x-amz-checksum-* headers on every upload, which several
        # S3-compatible servers refuse: send them only where S3 requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard"},
        max_pool_connections=MAX_CONNECTIONS,
    )
    return session.client("s3", endpoint_url=endpoint_url, use_ssl=secure, config=config)


class Head(NamedTuple):
    size: int
    etag: str
    metadata: dict[str, str]
    modified: datetime


class Bucket:
    """Objects and multipart uploads of one bucket, by full object name."""

    def __init__(
        self, client: S3Client, bucket: str, *, encrypt: bool, copy_part_size: int
    ) -> None:
        """encrypt has S3 encrypt what it stores with its own keys (SSE-S3, AES256); parts and
        copies inherit it from their upload or are given it."""
        self.client = client
        self.name = bucket
        self._encryption: _Encryption = {"ServerSideEncryption": "AES256"} if encrypt else {}
        self._copy_part_size = copy_part_size
        self._parts = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="s3-part")

    async def run(self, call: Callable[[], T], limiter: anyio.CapacityLimiter | None = None) -> T:
        return await to_thread.run_sync(call, limiter=limiter)

    async def pages(self, pages: Iterable[P]) -> AsyncIterator[P]:
        """A paginator's pages, each fetched in a worker thread."""
        iterator = iter(pages)
        while (page := await self.run(lambda: next(iterator, None))) is not None:
            yield page

    # objects

    async def head(self, name: str) -> Head | None:
        """The object named name, None if there is none."""
        try:
            head = await self.run(lambda: self.client.head_object(Bucket=self.name, Key=name))
        except ClientError as error:
            if error_code(error) in MISSING:
                return None
            raise
        return Head(head["ContentLength"], head["ETag"], head["Metadata"], head["LastModified"])

    async def open(
        self, name: str, byte_range: str, etag: str | None = None
    ) -> StreamingBody | None:
        """The body of a ranged GET (of the object while still at etag, if given: else a
        PreconditionFailed ClientError); None when the range starts at or past the end,
        ClientError with a MISSING code when there is no object."""

        def get() -> GetObjectOutputTypeDef:
            if etag is None:
                return self.client.get_object(Bucket=self.name, Key=name, Range=byte_range)
            return self.client.get_object(
                Bucket=self.name, Key=name, Range=byte_range, IfMatch=etag
            )

        try:
            response = await self.run(get)
        except ClientError as error:
            if error_code(error) == "InvalidRange":
                return None
            raise
        return response["Body"]

    @staticmethod
    async def chunks(body: StreamingBody | None) -> AsyncIterator[bytes]:
        """The bytes of what open() returned, READ_CHUNK at a time, read in a thread one chunk
        ahead of the reader (while a chunk goes to the client, the next comes from S3); closed
        at the end, or when the reader stops early."""
        if body is None:
            return
        ahead: asyncio.Future[bytes] | None = None
        try:
            chunk = await to_thread.run_sync(body.read, READ_CHUNK)
            while chunk:
                ahead = asyncio.ensure_future(to_thread.run_sync(body.read, READ_CHUNK))
                yield chunk
                chunk = await ahead
                ahead = None
        finally:
            if ahead is not None:
                # The thread cannot be stopped mid-read: wait for it, then close.
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
            body.close()

    async def get_range(self, name: str, start: int, end: int, etag: str) -> bytes:
        """Bytes [start, end) of an object known by its ETag, which must still be the same."""
        if start == end:
            return b""

        def get() -> bytes:
            response = self.client.get_object(
                Bucket=self.name, Key=name, Range=f"bytes={start}-{end - 1}", IfMatch=etag
            )
            with contextlib.closing(response["Body"]) as body:
                return body.read()

        return await self.run(get)

    async def put(self, name: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        """Store data under name; its ETag."""
        put = functools.partial(
            self.client.put_object,
            Bucket=self.name,
            Key=name,
            Body=data,
            Metadata=metadata or {},
            **self._encryption,
        )
        return (await self.run(put))["ETag"]

    async def copy(
        self,
        source: str,
        etag: str,
        target: str,
        size: int,
        max_copy: int,
        source_bucket: str | None = None,
    ) -> None:
        """Copy the object source, still at etag, of source_bucket (by default this one, else
        another of the same server) to target: CopyObject up to max_copy bytes, above it a
        multipart copy. Either way target appears whole or not at all, without the source's
        metadata."""
        if size > max_copy:
            await self._copy_large(source, etag, target, size, source_bucket)
            return
        await self.run(
            lambda: self.client.copy_object(
                Bucket=self.name,
                Key=target,
                CopySource={"Bucket": source_bucket or self.name, "Key": source},
                CopySourceIfMatch=etag,
                MetadataDirective="REPLACE",
                **self._encryption,
            )
        )

    async def _copy_large(
        self, source: str, etag: str, target: str, size: int, source_bucket: str | None
    ) -> None:
        upload_id = await self.create_upload(target)
        try:
            parts = await self.copy_parts(source, etag, target, upload_id, size, source_bucket)
            await self.complete(target, upload_id, parts)
        except BaseException:
            await self.abort(target, upload_id)
            raise

    async def names(self, prefix: str) -> AsyncIterator[tuple[str, int, datetime]]:
        """(name, size, last modified) of every object whose name starts with prefix."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        async for page in self.pages(pages):
            for item in page.get("Contents", []):
                yield item["Key"], item["Size"], item["LastModified"]

    async def delete(self, names: Sequence[str]) -> None:
        for start in range(0, len(names), 1000):  # DeleteObjects takes 1000 at most
            batch: list[ObjectIdentifierTypeDef] = [{"Key": name} for name in names[start:][:1000]]
            delete = functools.partial(
                self.client.delete_objects,
                Bucket=self.name,
                Delete={"Objects": batch, "Quiet": True},
            )
            if errors := (await self.run(delete)).get("Errors"):
                raise StorageError(f"could not delete {errors[0].get('Key')}: {errors[0]}")

    def presigned_url(self, name: str, expires: int) -> str:
        """A URL that GETs the object for expires seconds, no credentials needed. Signed
        locally: no request, no check that it exists."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.name, "Key": name}, ExpiresIn=expires
        )

    # multipart uploads

    async def create_upload(self, name: str) -> str:
        upload = await self.run(
            lambda: self.client.create_multipart_upload(
                Bucket=self.name, Key=name, **self._encryption
            )
        )
        return upload["UploadId"]

    def start_part(self, name: str, upload_id: str, number: int, data: bytes) -> Future[None]:
        """Upload a part in the background, so that a writer goes on receiving meanwhile."""

        def upload() -> None:
            self.client.upload_part(
                Bucket=self.name, Key=name, UploadId=upload_id, PartNumber=number, Body=data
            )

        return self._parts.submit(upload)

    async def copy_part(
        self,
        name: str,
        upload_id: str,
        number: int,
        source: str,
        etag: str,
        size: int,
        start: int = 0,
        limiter: anyio.CapacityLimiter | None = None,
        source_bucket: str | None = None,
    ) -> str:
        """Make part number of an upload from size bytes of source (still at etag, in
        source_bucket, by default this one) from start, server-side. The part's ETag."""
        copy = functools.partial(
            self.client.upload_part_copy,
            Bucket=self.name,
            Key=name,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": source_bucket or self.name, "Key": source},
            CopySourceIfMatch=etag,
            CopySourceRange=f"bytes={start}-{start + size - 1}",
        )
        return (await self.run(copy, limiter))["CopyPartResult"]["ETag"]

    async def copy_parts(
        self,
        source: str,
        etag: str,
        name: str,
        upload_id: str,
        size: int,
        source_bucket: str | None = None,
    ) -> list[CompletedPartTypeDef]:
        """Copy bytes [0, size) of source (still at etag, in source_bucket, by default this
        one) into the first parts of an upload, server-side, several parts at a time."""
        limiter = anyio.CapacityLimiter(COPY_CONCURRENCY)
        etags: dict[int, str] = {}

        async def copy(number: int, start: int, end: int) -> None:
            etags[number] = await self.copy_part(
                name, upload_id, number, source, etag, end - start, start, limiter, source_bucket
            )

        async with anyio.create_task_group() as group:
            for number, (start, end) in enumerate(_ranges(size, self._copy_part_size), 1):
                group.start_soon(copy, number, start, end)
        return [{"PartNumber": number, "ETag": etags[number]} for number in sorted(etags)]

    async def list_parts(self, name: str, upload_id: str) -> list[PartTypeDef]:
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.name, Key=name, UploadId=upload_id
        )
        return [part async for page in self.pages(pages) for part in page.get("Parts", [])]

    async def complete(
        self, name: str, upload_id: str, parts: Sequence[CompletedPartTypeDef]
    ) -> None:
        await self.run(
            lambda: self.client.complete_multipart_upload(
                Bucket=self.name,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)},
            )
        )

    async def abort(self, name: str, upload_id: str) -> None:
        """Abort an upload; no error if it is gone already."""
        try:
            await self.run(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.name, Key=name, UploadId=upload_id
                )
            )
        except ClientError as error:
            if error_code(error) not in UPLOAD_GONE:
                raise

    async def abort_uploads(self, name: str, *, under: bool) -> None:
        """Abort every multipart upload of name, and of the names under it when under is true."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.name, Prefix=name
        )
        found = [
            (upload["Key"], upload["UploadId"])
            async for page in self.pages(pages)
            for upload in page.get("Uploads", [])
            if upload["Key"] == name or (under and upload["Key"].startswith(name + "/"))
        ]
        for upload_name, upload_id in found:
            await self.abort(upload_name, upload_id)
