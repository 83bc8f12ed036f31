"""Unfinished objects on S3: written by S3 multipart uploads left open between writers, so that
any process, on any machine, can continue one from what the bucket holds:

    <name>           a finished object; when it exists, it is what the name holds
    <name>~tail      an unfinished one: the bytes after its uploaded parts, and in its metadata
                     the multipart upload id, how many parts come before it and their total size.
                     A writer puts it last, on close: it is the record of what the name holds.
                     `~` is outside KEY_PATTERN, so no key can name it.
    multipart upload of <name>   the parts, part_size each (more past 1000 parts)

Appending never reads back what the bucket holds: a writer continues the recorded upload, and
starts from the tail's bytes as this process last put them (kept in memory, up to a budget),
else from a server-side copy of the tail into a part when it is large enough for one. Only a
tail shorter than a part that another process put is read back, and it is under 5 MiB.

S3 cannot read the parts of an open upload back, so reading or moving an unfinished object with
parts completes its upload first; continuing before the end of its parts does too, then starts a
new upload from the finished object with server-side part copies. A writer that dies after
uploading parts, before its tail records them, leaves parts no tail accounts for; RGW completes
no upload without all of its parts, so that upload can no longer be finished (an error when read
or moved, as if its bytes were lost).
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from anyio import to_thread
from botocore.exceptions import ClientError

from portside.storage.base import NotFound, StorageError
from portside.storage.s3_bucket import MAX_PARTS, MIN_PART, UPLOAD_GONE, MiB, error_code

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from portside.storage.s3_bucket import Bucket

TAIL: Final = "~tail"
PARTS_PER_STEP: Final = 1000  # part size grows by part_size every 1000 parts: 430 GiB at 8 MiB
TAIL_MEMORY: Final = 128 * MiB  # tails kept in memory, the least recently put dropped first


@dataclass(frozen=True, slots=True)
class Unfinished:
    """What a tail object records about an unfinished object."""

    upload_id: str | None
    parts: int
    parts_size: int
    tail_size: int
    tail_etag: str

    @property
    def size(self) -> int:
        return self.parts_size + self.tail_size


class _TailMemory:
    """The tails this process put, by name and ETag, within a byte budget."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._tails: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def get(self, name: str, etag: str) -> bytes | None:
        found = self._tails.get(name)
        return found[1] if found is not None and found[0] == etag else None

    def put(self, name: str, etag: str, tail: bytes) -> None:
        self.forget(name)
        if len(tail) > self._budget:
            return
        self._tails[name] = (etag, tail)
        self._used += len(tail)
        while self._used > self._budget:
            _, (_, dropped) = self._tails.popitem(last=False)
            self._used -= len(dropped)

    def forget(self, name: str) -> None:
        if (found := self._tails.pop(name, None)) is not None:
            self._used -= len(found[1])


class UnfinishedObjects:
    """Writers and the upkeep of unfinished objects, by full object name."""

    def __init__(self, bucket: Bucket, part_size: int) -> None:
        self.bucket = bucket
        self._part_size = part_size
        self._tails = _TailMemory(TAIL_MEMORY)

    def part_limit(self, number: int) -> int:
        return self._part_size * (1 + (number - 1) // PARTS_PER_STEP)

    async def find(self, name: str) -> Unfinished | None:
        found = await self.bucket.head(name + TAIL)
        if found is None:
            return None
        metadata = found.metadata
        return Unfinished(
            metadata.get("upload-id"),
            int(metadata.get("parts", 0)),
            int(metadata.get("parts-size", 0)),
            found.size,
            found.etag,
        )

    async def put_tail(
        self, name: str, tail: bytes, upload_id: str | None, parts: int, parts_size: int
    ) -> None:
        metadata = {"parts": str(parts), "parts-size": str(parts_size)}
        if upload_id is not None:
            metadata["upload-id"] = upload_id
        etag = await self.bucket.put(name + TAIL, tail, metadata)
        self._tails.put(name, etag, tail)

    # writers

    async def new_writer(self, name: str) -> S3Writer:
        """A writer of a new object replacing whatever name holds once it closes."""
        stale = await self.find(name)
        upload_id = stale.upload_id if stale is not None else None
        return S3Writer(self, name, replaces_object=True, stale_upload=upload_id)

    async def continue_writer(self, name: str, unfinished: Unfinished, offset: int) -> S3Writer:
        """A writer going on with the unfinished object's upload at offset, dropping what is
        past it; inside its parts, from a new upload (see the module)."""
        if offset >= unfinished.parts_size:
            return await self._continue_in_tail(name, unfinished, offset - unfinished.parts_size)
        # Even at the end of a part: S3 (RGW at least) completes no upload that has parts it is
        # not given, and an upload has no way to drop one.
        await self.complete(name, unfinished)
        found = await self.bucket.head(name)
        if found is None:
            raise NotFound(name)
        return await self.finished_writer(name, found.etag, offset)

    async def _continue_in_tail(self, name: str, unfinished: Unfinished, keep: int) -> S3Writer:
        """Keep the tail's first keep bytes: from memory, else copied server-side into a part of
        their own when they are enough for one, else read back."""
        upload_id, parts, parts_size = unfinished.upload_id, unfinished.parts, unfinished.parts_size
        remembered = self._tails.get(name, unfinished.tail_etag)
        if remembered is not None or keep < MIN_PART:
            tail = remembered[:keep] if remembered is not None else b""
            if remembered is None and keep:
                tail = await self.bucket.get_range(name + TAIL, 0, keep, unfinished.tail_etag)
            return S3Writer(
                self, name, upload_id=upload_id, parts=parts, parts_size=parts_size, buffer=tail
            )
        if parts + 1 > MAX_PARTS:
            raise StorageError(f"{name} is too large for a multipart upload")
        created = upload_id is None
        if upload_id is None:
            upload_id = await self.bucket.create_upload(name)
        try:
            await self.bucket.copy_part(
                name, upload_id, parts + 1, name + TAIL, unfinished.tail_etag, keep
            )
        except BaseException:
            if created:  # no tail records it
                await self.bucket.abort(name, upload_id)
            raise
        return S3Writer(
            self, name, upload_id=upload_id, parts=parts + 1, parts_size=parts_size + keep
        )

    async def finished_writer(self, name: str, etag: str, offset: int) -> S3Writer:
        """A writer on a new upload that starts with the finished object's first offset bytes
        (at etag): copied server-side into parts, or read into the buffer when too short for a
        part."""
        if offset < MIN_PART:
            head = await self.bucket.get_range(name, 0, offset, etag)
            return S3Writer(self, name, buffer=head, replaces_object=True)
        upload_id = await self.bucket.create_upload(name)
        try:
            parts = await self.bucket.copy_parts(name, etag, name, upload_id, offset)
        except BaseException:
            await self.bucket.abort(name, upload_id)
            raise
        return S3Writer(
            self,
            name,
            upload_id=upload_id,
            parts=len(parts),
            parts_size=offset,
            replaces_object=True,
        )

    # finishing and removing

    async def complete(self, name: str, unfinished: Unfinished) -> None:
        """Finish an unfinished object with parts: its recorded parts, then its tail."""
        assert unfinished.upload_id is not None
        upload_id = unfinished.upload_id
        try:
            listed = (await self.bucket.list_parts(name, upload_id))[: unfinished.parts]
            if [part["PartNumber"] for part in listed] != list(
                range(1, unfinished.parts + 1)
            ) or sum(part["Size"] for part in listed) != unfinished.parts_size:
                raise StorageError(f"{name}: parts of its multipart upload are missing")
            parts: list[CompletedPartTypeDef] = [
                {"PartNumber": part["PartNumber"], "ETag": part["ETag"]} for part in listed
            ]
            if unfinished.tail_size:
                number = unfinished.parts + 1
                etag = await self.bucket.copy_part(
                    name, upload_id, number, name + TAIL, unfinished.tail_etag, unfinished.tail_size
                )
                parts.append({"PartNumber": number, "ETag": etag})
            await self.bucket.complete(name, upload_id, parts)
        except ClientError as error:
            # Another reader or mover finished it first.
            if error_code(error) not in UPLOAD_GONE or await self.bucket.head(name) is None:
                raise
        self._tails.forget(name)
        await self.bucket.delete([name + TAIL])

    async def settle(self, name: str) -> str:
        """The name of an object holding all of the unfinished object under name: its tail when
        it has no parts, else the object itself, once its upload is completed."""
        unfinished = await self.find(name)
        if unfinished is None:
            raise NotFound(name)
        if unfinished.upload_id is None:
            return name + TAIL
        await self.complete(name, unfinished)
        return name

    async def discard(self, name: str) -> None:
        """Remove the name's object, finished or not, and every multipart upload of it."""
        self._tails.forget(name)
        await self.bucket.delete([name, name + TAIL])
        await self.bucket.abort_uploads(name, under=False)

    async def drop(self, name: str) -> None:
        """Remove what an unfinished object under name left, once a finished one replaced it."""
        unfinished = await self.find(name)
        if unfinished is not None:
            self._tails.forget(name)
            await self.bucket.delete([name + TAIL])
            if unfinished.upload_id is not None:
                await self.bucket.abort(name, unfinished.upload_id)


@dataclass(frozen=True, slots=True)
class _Uploading:
    """A part on its way to the bucket."""

    number: int
    size: int
    done: Future[None]


class S3Writer:
    """Buffers writes and uploads each part as it fills, in the background while the next one
    fills: at most two parts in memory. One part at a time, so that none is uploaded after one
    that failed: S3 would not complete the upload without it. A part counts once S3 has
    acknowledged it; when one fails, what was written after it is lost with it."""

    def __init__(
        self,
        objects: UnfinishedObjects,
        name: str,
        *,
        upload_id: str | None = None,
        parts: int = 0,
        parts_size: int = 0,
        buffer: bytes = b"",
        replaces_object: bool = False,
        stale_upload: str | None = None,
    ) -> None:
        self._objects = objects
        self._name = name
        self._upload_id = upload_id
        self._parts = parts
        self._parts_size = parts_size
        self._uploading: _Uploading | None = None
        self._buffer = bytearray(buffer)
        self._replaces_object = replaces_object
        self._stale_upload = stale_upload
        self._closed = False

    @property
    def size(self) -> int:
        uploading = 0 if self._uploading is None else self._uploading.size
        return self._parts_size + uploading + len(self._buffer)

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise StorageError(f"writer of {self._name} is closed")
        self._buffer += data
        while len(self._buffer) >= (limit := self._objects.part_limit(self._next_part)):
            await self._start_part(limit)

    @property
    def _next_part(self) -> int:
        return self._parts + (self._uploading is not None) + 1

    async def _start_part(self, length: int) -> None:
        await self._finish_upload()
        number = self._next_part
        if number > MAX_PARTS:
            raise StorageError(f"{self._name} is too large for a multipart upload")
        bucket = self._objects.bucket
        if self._upload_id is None:
            self._upload_id = await bucket.create_upload(self._name)
        done = bucket.start_part(self._name, self._upload_id, number, bytes(self._buffer[:length]))
        self._uploading = _Uploading(number, length, done)
        del self._buffer[:length]

    async def _finish_upload(self) -> None:
        """Wait for the part on its way, if any; raise its error, keeping it on the way."""
        if (part := self._uploading) is not None:
            await to_thread.run_sync(part.done.result)
            self._uploading = None
            self._parts = part.number
            self._parts_size += part.size

    async def commit(self) -> None:
        """close, but failing when a part did: the parts and the tail are durable once S3 has
        acknowledged them."""
        if (error := await self._close()) is not None:
            raise StorageError(f"{self._name}: part {self._parts + 1} failed") from error

    async def close(self) -> None:
        await self._close()

    async def _close(self) -> Exception | None:
        """Close; the error of a part that failed, when one did."""
        if self._closed:
            return None
        self._closed = True
        objects, name = self._objects, self._name
        error = None
        try:
            await self._finish_upload()
        except Exception as failed:  # commit reports it; close keeps what came before
            error = failed
            self._uploading = None
            self._buffer.clear()
        if self._upload_id is not None and self._parts == 0:  # its first part failed
            await objects.bucket.abort(name, self._upload_id)
            self._upload_id = None
        await objects.put_tail(
            name, bytes(self._buffer), self._upload_id, self._parts, self._parts_size
        )
        if self._replaces_object:
            await objects.bucket.delete([name])
        if self._stale_upload is not None and self._stale_upload != self._upload_id:
            await objects.bucket.abort(name, self._stale_upload)
        return error

    async def cancel(self) -> None:
        self._closed = True
        if (part := self._uploading) is not None:
            await to_thread.run_sync(part.done.exception)  # its bytes go with the upload
        self._uploading = None
        self._buffer.clear()
        await self._objects.discard(self._name)
