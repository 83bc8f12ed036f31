"""Blobs as objects in an S3-compatible bucket (AWS S3, Ceph RGW, MinIO) under a key prefix.

Writers stream S3 multipart uploads and leave them open on close, so that any process, on any
machine, can resume one from what the bucket holds:

    <prefix><key>           a finished object; when it exists, it is what the key holds
    <prefix><key>~tail      an unfinished one: the bytes after its uploaded parts, and in its
                            metadata the multipart upload id, how many parts come before it and
                            their total size. A writer puts it last, on close: it is the record of
                            what the key holds. `~` is outside KEY_PATTERN, so no key can name it.
    multipart upload of <prefix><key>   the parts, part_size each (more past 1000 parts)

S3 cannot read the parts of an open upload back, so reading or moving an unfinished object with
parts completes its upload first; resuming inside an uploaded part does too, then starts a new
upload from the finished object with server-side part copies.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypedDict, TypeVar

import anyio
from anyio import to_thread

from portside.storage.base import KEY_PATTERN, NotFound, ObjectInfo, StorageError, check_key

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
        ObjectIdentifierTypeDef,
        PartTypeDef,
    )

T = TypeVar("T")
P = TypeVar("P")

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB
MIN_PART: Final = 5 * MiB  # S3's smallest part, but for the last one
MAX_PARTS: Final = 10_000
MAX_COPY: Final = 5 * GiB  # S3's largest CopyObject, and largest part
PARTS_PER_STEP: Final = 1000  # part size grows by part_size every 1000 parts: 430 GiB at 8 MiB
READ_CHUNK: Final = MiB
COPY_CONCURRENCY: Final = 8
MAX_CONNECTIONS: Final = 40  # anyio's default number of worker threads
TAIL: Final = "~tail"
MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})
UPLOAD_GONE: Final = frozenset({"NoSuchUpload", "NoSuchKey", "404"})  # RGW says NoSuchKey


class _Encryption(TypedDict, total=False):
    """What every call that makes an object (or the upload that becomes one) carries."""

    ServerSideEncryption: ServerSideEncryptionType


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _ranges(size: int, piece: int) -> list[tuple[int, int]]:
    """[start, end) ranges covering size bytes, each piece long but the last, which takes the
    remainder (so every range is at least min(size, piece) long)."""
    count = max(1, size // piece)
    return [(i * piece, size if i == count - 1 else (i + 1) * piece) for i in range(count)]


@dataclass(frozen=True, slots=True)
class _Unfinished:
    """What a tail object records about an unfinished object."""

    upload_id: str | None
    parts: int
    parts_size: int
    tail_size: int
    tail_etag: str

    @property
    def size(self) -> int:
        return self.parts_size + self.tail_size


class S3Writer:
    """Buffers writes and uploads each full part as it fills; at most one part in memory."""

    def __init__(
        self,
        store: S3BlobStore,
        key: str,
        *,
        upload_id: str | None = None,
        parts: int = 0,
        parts_size: int = 0,
        buffer: bytes = b"",
        replaces_object: bool = False,
        stale_upload: str | None = None,
    ) -> None:
        self._store = store
        self._key = key
        self._upload_id = upload_id
        self._parts = parts
        self._parts_size = parts_size
        self._buffer = bytearray(buffer)
        self._replaces_object = replaces_object
        self._stale_upload = stale_upload
        self._closed = False

    @property
    def size(self) -> int:
        return self._parts_size + len(self._buffer)

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise StorageError(f"writer of {self._key} is closed")
        self._buffer += data
        while len(self._buffer) >= (limit := self._store._part_limit(self._parts + 1)):
            await self._upload_part(limit)

    async def _upload_part(self, length: int) -> None:
        number = self._parts + 1
        if number > MAX_PARTS:
            raise StorageError(f"{self._key} is too large for a multipart upload")
        if self._upload_id is None:
            self._upload_id = await self._store._create_upload(self._key)
        await self._store._upload_part(
            self._key, self._upload_id, number, bytes(self._buffer[:length])
        )
        del self._buffer[:length]
        self._parts = number
        self._parts_size += length

    async def commit(self) -> None:
        """The same as close: the parts and the tail are durable once S3 has acknowledged them."""
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        store, key = self._store, self._key
        if self._upload_id is not None and self._parts == 0:  # its first part failed
            await store._abort_upload(key, self._upload_id)
            self._upload_id = None
        await store._put_tail(
            key, bytes(self._buffer), self._upload_id, self._parts, self._parts_size
        )
        if self._replaces_object:
            await store._delete_names([store._name(key)])
        if self._stale_upload is not None and self._stale_upload != self._upload_id:
            await store._abort_upload(key, self._stale_upload)

    async def cancel(self) -> None:
        self._closed = True
        self._buffer.clear()
        await self._store._discard(self._key)


class S3BlobStore:
    """Keys map to objects named prefix + key in one bucket. boto3 is called in worker threads:
    its clients are thread-safe and well kept, where aiobotocore pins botocore to one release."""

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
        AES256); parts and copies inherit it from their upload or are given it. part_size,
        copy_part_size and max_copy_size are for tests and tuning."""
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
        self._part_size = part_size
        self._copy_part_size = copy_part_size
        self._max_copy_size = max_copy_size
        self._encryption: _Encryption = {"ServerSideEncryption": "AES256"} if encrypt else {}
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
        self.client: S3Client = session.client(
            "s3", endpoint_url=endpoint_url, use_ssl=secure, config=config
        )

    # names and small helpers

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _part_limit(self, number: int) -> int:
        return self._part_size * (1 + (number - 1) // PARTS_PER_STEP)

    async def _run(self, call: Callable[[], T], limiter: anyio.CapacityLimiter | None = None) -> T:
        return await to_thread.run_sync(call, limiter=limiter)

    async def _head(self, name: str) -> tuple[int, str, dict[str, str]] | None:
        """Size, ETag and metadata of the object named name, None if there is none."""
        try:
            head = await self._run(lambda: self.client.head_object(Bucket=self.bucket, Key=name))
        except ClientError as error:
            if _code(error) in MISSING:
                return None
            raise
        return head["ContentLength"], head["ETag"], head["Metadata"]

    async def _unfinished(self, key: str) -> _Unfinished | None:
        found = await self._head(self._name(key) + TAIL)
        if found is None:
            return None
        size, etag, metadata = found
        return _Unfinished(
            metadata.get("upload-id"),
            int(metadata.get("parts", 0)),
            int(metadata.get("parts-size", 0)),
            size,
            etag,
        )

    async def _put_tail(
        self, key: str, tail: bytes, upload_id: str | None, parts: int, parts_size: int
    ) -> None:
        metadata = {"parts": str(parts), "parts-size": str(parts_size)}
        if upload_id is not None:
            metadata["upload-id"] = upload_id
        name = self._name(key) + TAIL
        await self._run(
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=name, Body=tail, Metadata=metadata, **self._encryption
            )
        )

    async def _get_range(self, name: str, start: int, end: int, etag: str) -> bytes:
        """Bytes [start, end) of an object known by its ETag, which must still be the same."""
        if start == end:
            return b""

        def get() -> bytes:
            response = self.client.get_object(
                Bucket=self.bucket, Key=name, Range=f"bytes={start}-{end - 1}", IfMatch=etag
            )
            with contextlib.closing(response["Body"]) as body:
                return body.read()

        return await self._run(get)

    # multipart uploads

    async def _create_upload(self, key: str) -> str:
        name = self._name(key)
        upload = await self._run(
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=name, **self._encryption
            )
        )
        return upload["UploadId"]

    async def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> None:
        name = self._name(key)
        await self._run(
            lambda: self.client.upload_part(
                Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=data
            )
        )

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        await self._abort(self._name(key), upload_id)

    async def _abort(self, name: str, upload_id: str) -> None:
        try:
            await self._run(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id
                )
            )
        except ClientError as error:
            if _code(error) not in UPLOAD_GONE:
                raise

    async def _list_parts(self, name: str, upload_id: str) -> list[PartTypeDef]:
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=name, UploadId=upload_id
        )
        return [part async for page in self._pages(pages) for part in page.get("Parts", [])]

    async def _pages(self, pages: Iterable[P]) -> AsyncIterator[P]:
        """A paginator's pages, each fetched in a worker thread."""
        iterator = iter(pages)
        while (page := await self._run(lambda: next(iterator, None))) is not None:
            yield page

    async def _copy_parts(
        self, source: str, etag: str, name: str, upload_id: str, size: int
    ) -> list[CompletedPartTypeDef]:
        """Copy bytes [0, size) of source (still at etag) into the first parts of an upload,
        server-side, several parts at a time."""
        limiter = anyio.CapacityLimiter(COPY_CONCURRENCY)
        etags: dict[int, str] = {}

        async def copy(number: int, start: int, end: int) -> None:
            result = await self._run(
                lambda: self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceIfMatch=etag,
                    CopySourceRange=f"bytes={start}-{end - 1}",
                ),
                limiter,
            )
            etags[number] = result["CopyPartResult"]["ETag"]

        async with anyio.create_task_group() as group:
            for number, (start, end) in enumerate(_ranges(size, self._copy_part_size), 1):
                group.start_soon(copy, number, start, end)
        return [{"PartNumber": number, "ETag": etags[number]} for number in sorted(etags)]

    async def _complete(self, key: str, unfinished: _Unfinished) -> None:
        """Finish an unfinished object with parts: its recorded parts, then its tail."""
        name = self._name(key)
        assert unfinished.upload_id is not None
        upload_id = unfinished.upload_id
        try:
            listed = (await self._list_parts(name, upload_id))[: unfinished.parts]
            if [part["PartNumber"] for part in listed] != list(
                range(1, unfinished.parts + 1)
            ) or sum(part["Size"] for part in listed) != unfinished.parts_size:
                raise StorageError(f"{key}: parts of its multipart upload are missing")
            parts: list[CompletedPartTypeDef] = [
                {"PartNumber": part["PartNumber"], "ETag": part["ETag"]} for part in listed
            ]
            if unfinished.tail_size:
                tail = await self._run(
                    lambda: self.client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=unfinished.parts + 1,
                        CopySource={"Bucket": self.bucket, "Key": name + TAIL},
                        CopySourceIfMatch=unfinished.tail_etag,
                    )
                )
                parts.append(
                    {"PartNumber": unfinished.parts + 1, "ETag": tail["CopyPartResult"]["ETag"]}
                )
            await self._run(
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            )
        except ClientError as error:
            # Another reader or mover finished it first.
            if _code(error) not in UPLOAD_GONE or await self._head(name) is None:
                raise
        await self._delete_names([name + TAIL])

    async def _settle(self, key: str) -> str:
        """The name of an object holding all of the unfinished object under key: its tail when
        it has no parts, else the object itself, once its upload is completed."""
        unfinished = await self._unfinished(key)
        if unfinished is None:
            raise NotFound(key)
        if unfinished.upload_id is None:
            return self._name(key) + TAIL
        await self._complete(key, unfinished)
        return self._name(key)

    # deleting

    async def _delete_names(self, names: Sequence[str]) -> None:
        for start in range(0, len(names), 1000):  # DeleteObjects takes 1000 at most
            batch: list[ObjectIdentifierTypeDef] = [{"Key": name} for name in names[start:][:1000]]
            delete = functools.partial(
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            if errors := (await self._run(delete)).get("Errors"):
                raise StorageError(f"could not delete {errors[0].get('Key')}: {errors[0]}")

    async def _abort_uploads(self, name: str, *, under: bool) -> None:
        """Abort every multipart upload of name, and of the names under it when under is true."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=name
        )
        found = [
            (upload["Key"], upload["UploadId"])
            async for page in self._pages(pages)
            for upload in page.get("Uploads", [])
            if upload["Key"] == name or (under and upload["Key"].startswith(name + "/"))
        ]
        for upload_name, upload_id in found:
            await self._abort(upload_name, upload_id)

    async def _discard(self, key: str) -> None:
        """Remove the key's object, finished or not, and every multipart upload of it."""
        name = self._name(key)
        await self._delete_names([name, name + TAIL])
        await self._abort_uploads(name, under=False)

    async def _drop_unfinished(self, key: str) -> None:
        """Remove what an unfinished object under key left, once a finished one replaced it."""
        unfinished = await self._unfinished(key)
        if unfinished is not None:
            await self._delete_names([self._name(key) + TAIL])
            if unfinished.upload_id is not None:
                await self._abort_upload(key, unfinished.upload_id)

    async def _names(self, prefix: str) -> AsyncIterator[str]:
        """Every object name starting with prefix, tails included."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        async for page in self._pages(pages):
            for item in page.get("Contents", []):
                yield item["Key"]

    # the BlobStore protocol

    async def stat(self, key: str) -> int:
        found = await self._head(self._name(key))
        if found is not None:
            return found[0]
        unfinished = await self._unfinished(key)
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
        end = "" if length is None else str(offset + length - 1)
        try:
            body = await self._open(key, name, f"bytes={offset}-{end}")
        except NotFound:
            body = await self._open(key, await self._settle(key), f"bytes={offset}-{end}")
        if body is None:
            return
        try:
            while chunk := await to_thread.run_sync(body.read, READ_CHUNK):
                yield chunk
        finally:
            body.close()

    async def _open(self, key: str, name: str, byte_range: str) -> StreamingBody | None:
        try:
            response = await self._run(
                lambda: self.client.get_object(Bucket=self.bucket, Key=name, Range=byte_range)
            )
        except ClientError as error:
            if _code(error) == "InvalidRange":
                return None
            if _code(error) in MISSING:
                raise NotFound(key) from None
            raise
        return response["Body"]

    async def get(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    async def put(self, key: str, data: bytes) -> None:
        name = self._name(key)
        await self._run(
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=name, Body=data, **self._encryption
            )
        )
        await self._drop_unfinished(key)

    async def writer(self, key: str, offset: int = 0) -> S3Writer:
        """Resumes from the bucket alone. Any offset up to the size works; an offset inside an
        uploaded part of an unfinished object first completes its upload (see the module)."""
        name = self._name(key)
        if offset < 0:
            raise ValueError(f"negative offset: {offset}")
        if offset == 0:
            stale = await self._unfinished(key)
            upload_id = stale.upload_id if stale is not None else None
            return S3Writer(self, key, replaces_object=True, stale_upload=upload_id)
        found = await self._head(name)
        if found is None:
            unfinished = await self._unfinished(key)
            if unfinished is None or unfinished.size < offset:
                raise NotFound(f"{key} is shorter than {offset}")
            resumed = await self._resume_unfinished(key, unfinished, offset)
            if resumed is not None:
                return resumed
            await self._complete(key, unfinished)
            found = await self._head(name)
            if found is None:
                raise NotFound(key)
        size, etag, _ = found
        if size < offset:
            raise NotFound(f"{key} is shorter than {offset}")
        return await self._resume_finished(key, etag, offset)

    async def _resume_unfinished(
        self, key: str, unfinished: _Unfinished, offset: int
    ) -> S3Writer | None:
        """A writer going on with the same upload, when offset is in the tail or at the end of
        an uploaded part; None when it is inside one."""
        upload_id = unfinished.upload_id
        if offset >= unfinished.parts_size:
            tail = await self._get_range(
                self._name(key) + TAIL, 0, offset - unfinished.parts_size, unfinished.tail_etag
            )
            return S3Writer(
                self,
                key,
                upload_id=upload_id,
                parts=unfinished.parts,
                parts_size=unfinished.parts_size,
                buffer=tail,
            )
        assert upload_id is not None  # parts_size > 0
        total = 0
        for part in (await self._list_parts(self._name(key), upload_id))[: unfinished.parts]:
            if total == offset:
                # Later parts stay in the upload until overwritten or left out on completion.
                return S3Writer(
                    self, key, upload_id=upload_id, parts=part["PartNumber"] - 1, parts_size=total
                )
            total += part["Size"]
        return None

    async def _resume_finished(self, key: str, etag: str, offset: int) -> S3Writer:
        """A writer on a new upload that starts with the object's first offset bytes: copied
        server-side into parts, or read into the buffer when too short for a part."""
        name = self._name(key)
        if offset < MIN_PART:
            head = await self._get_range(name, 0, offset, etag)
            return S3Writer(self, key, buffer=head, replaces_object=True)
        upload_id = await self._create_upload(key)
        try:
            parts = await self._copy_parts(name, etag, name, upload_id, offset)
        except BaseException:
            await self._abort(name, upload_id)
            raise
        return S3Writer(
            self,
            key,
            upload_id=upload_id,
            parts=len(parts),
            parts_size=offset,
            replaces_object=True,
        )

    async def move(self, src: str, dst: str) -> None:
        """CopyObject, or a multipart copy above max_copy_size (both appear whole or not at
        all), then delete src. Not a rename: a crash in between leaves both."""
        source, target = self._name(src), self._name(dst)
        if source == target:
            await self.stat(src)
            return
        found = await self._head(source)
        if found is None:
            source = await self._settle(src)
            found = await self._head(source)
            if found is None:
                raise NotFound(src)
        size, etag, _ = found
        if size <= self._max_copy_size:
            await self._run(
                lambda: self.client.copy_object(
                    Bucket=self.bucket,
                    Key=target,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceIfMatch=etag,
                    MetadataDirective="REPLACE",  # a tail's metadata is no object's
                    **self._encryption,
                )
            )
        else:
            await self._copy_large(source, etag, target, size)
        await self._drop_unfinished(dst)
        await self._discard(src)

    async def _copy_large(self, source: str, etag: str, target: str, size: int) -> None:
        upload = await self._run(
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=target, **self._encryption
            )
        )
        upload_id = upload["UploadId"]
        try:
            parts = await self._copy_parts(source, etag, target, upload_id, size)
            await self._run(
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            )
        except BaseException:
            await self._abort(target, upload_id)
            raise

    async def delete(self, key: str) -> None:
        """Objects under key, finished or not, and their multipart uploads, open or abandoned."""
        name = self._name(key)
        batch = [name, name + TAIL]
        async for found in self._names(name + "/"):
            batch.append(found)
            if len(batch) == 1000:
                await self._delete_names(batch)
                batch = []
        await self._delete_names(batch)
        await self._abort_uploads(name, under=True)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        try:
            await self.stat(prefix)
        except NotFound:
            pass
        else:
            yield prefix
        async for name in self._names(self._name(prefix) + "/"):
            key = name[len(self.prefix) :]
            if KEY_PATTERN.fullmatch(key):
                yield key
            elif (
                name.endswith(TAIL)
                and KEY_PATTERN.fullmatch(key.removesuffix(TAIL))
                and await self._head(name.removesuffix(TAIL)) is None
            ):
                yield key.removesuffix(TAIL)  # unfinished, and not beside a finished one

    async def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """The listing gives each finished object's size and time; an unfinished one's size is
        in its tail's metadata, its time the tail's."""
        if (found := await self._head(self._name(prefix))) is not None:
            head = await self._run(
                lambda: self.client.head_object(Bucket=self.bucket, Key=self._name(prefix))
            )
            yield ObjectInfo(prefix, found[0], head["LastModified"])
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._name(prefix) + "/"
        )
        finished: set[str] = set()
        tails: dict[str, ObjectInfo] = {}
        async for page in self._pages(pages):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                if KEY_PATTERN.fullmatch(key):
                    finished.add(key)
                    yield ObjectInfo(key, item["Size"], item["LastModified"])
                elif key.endswith(TAIL) and KEY_PATTERN.fullmatch(key.removesuffix(TAIL)):
                    key = key.removesuffix(TAIL)
                    tails[key] = ObjectInfo(key, item["Size"], item["LastModified"])
        for key, tail in tails.items():
            if key not in finished and (unfinished := await self._unfinished(key)) is not None:
                yield ObjectInfo(key, unfinished.size, tail.modified)

    def local_path(self, key: str) -> Path | None:
        check_key(key)
        return None

    def redirect_url(self, key: str, expires: int) -> str:
        return self.presigned_url(key, expires)

    def presigned_url(self, key: str, expires: int = 3600) -> str:
        """A URL that GETs the finished object under key for expires seconds, no credentials
        needed (for `storage_redirect`). Signed locally: no request, no check that it exists."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=expires
        )
