"""The blob store contract on S3BlobStore against a real S3 server (Ceph RGW from
scripts/s3-test-server, or the one S3_ENDPOINT_URL names), then what only S3 shows:
multipart uploads resumed by another process, truncation, multipart copies, presigned URLs, and
the registry's chunked uploads spread over two instances sharing the bucket."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

import httpx
import pytest
from blob_store import BlobStoreContract, keys_under, write_chunks

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import STORAGE_DRIVERS, create_app
from portside.storage.base import BlobStore, InvalidKey, NotFound, StorageError
from portside.storage.s3 import TAIL, S3BlobStore
from s3 import S3Server, leftovers, object_names, uploads

MIB = 1024 * 1024
PART = 5 * MIB  # the smallest part S3 takes, so that a few MiB cross part boundaries


@pytest.fixture
def s3_store(s3_server: S3Server) -> S3BlobStore:
    return s3_server.store(part_size=PART, copy_part_size=PART)


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, s3_store: S3BlobStore) -> BlobStore:
        return s3_store

    async def leftovers(self, store: BlobStore) -> list[str]:
        assert isinstance(store, S3BlobStore)
        return leftovers(store)


def part_sizes(store: S3BlobStore) -> list[int]:
    [(name, upload_id)] = uploads(store)
    parts = store.client.list_parts(Bucket=store.bucket, Key=name, UploadId=upload_id)
    return [part["Size"] for part in parts.get("Parts", [])]


def etag(store: S3BlobStore, key: str) -> str:
    return store.client.head_object(Bucket=store.bucket, Key=store.prefix + key)["ETag"]


async def test_writer_uploads_each_part_as_it_fills(s3_store: S3BlobStore) -> None:
    writer = await s3_store.writer("upload")
    for _ in range(11):
        await writer.write(os.urandom(MIB))
    # While writing: never the whole blob in memory (each part goes up in the background).
    for _ in range(100):
        if part_sizes(s3_store) == [PART, PART]:
            break
        await asyncio.sleep(0.05)
    assert part_sizes(s3_store) == [PART, PART]
    assert writer.size == 11 * MIB
    await writer.cancel()
    assert uploads(s3_store) == []
    assert object_names(s3_store) == []


async def test_another_process_resumes_the_same_multipart_upload(
    s3_server: S3Server, s3_store: S3BlobStore
) -> None:
    data = os.urandom(12 * MIB)
    first = 8 * MIB + 5
    assert await write_chunks(s3_store, "upload", data[:first], MIB) == first
    [(_, upload_id)] = uploads(s3_store)
    assert await s3_store.stat("upload") == first

    # Another client on the same prefix: what a worker on another machine sees.
    other = s3_server.store(s3_store.prefix, part_size=PART)
    writer = await other.writer("upload", first)
    assert writer.size == first
    await writer.write(data[first:])
    await writer.commit()
    assert writer.size == len(data)
    assert uploads(other) == [(other.prefix + "upload", upload_id)]  # continued, not copied
    assert part_sizes(other) == [PART, PART]
    assert await other.stat("upload") == len(data)

    assert await s3_store.get("upload") == data
    assert etag(s3_store, "upload").endswith('-3"')  # the two parts, then the tail
    assert leftovers(s3_store) == []


class BytesRead:
    """Counts the bytes a store's client GETs from the bucket."""

    def __init__(self, store: S3BlobStore) -> None:
        self.total = 0
        store.client.meta.events.register("after-call.s3.GetObject", self._count)

    def _count(self, parsed: dict[str, object], **_: object) -> None:
        length = parsed.get("ContentLength", 0)
        assert isinstance(length, int)
        self.total += length


async def append(store: S3BlobStore, key: str, chunk: bytes) -> None:
    """One chunk as a PATCH appends it: a writer continuing at the size."""
    writer = await store.writer(key, await store.stat(key) if chunk else 0)
    await writer.write(chunk)
    await writer.close()


async def test_appending_reads_nothing_back(s3_server: S3Server) -> None:
    store = s3_server.store(part_size=8 * MIB)
    read = BytesRead(store)
    chunks = [os.urandom(100 * 1024) for _ in range(100)] + [os.urandom(20 * MIB)]
    writer = await store.writer("upload")
    await writer.close()
    for chunk in chunks:
        await append(store, "upload", chunk)
    assert read.total == 0
    assert part_sizes(store) == [8 * MIB, 8 * MIB, 8 * MIB]  # parts fill across writers
    assert await store.get("upload") == b"".join(chunks)
    assert leftovers(store) == []


async def test_chunks_alternating_between_two_processes(s3_server: S3Server) -> None:
    """Each process reads back at most the tail the other put, never a part."""
    stores = [s3_server.store(part_size=PART), None]
    stores[1] = s3_server.store(stores[0].prefix, part_size=PART)
    reads = [BytesRead(store) for store in stores]
    chunks = [os.urandom(700 * 1024) for _ in range(30)]
    writer = await stores[0].writer("upload")
    await writer.close()
    for number, chunk in enumerate(chunks):
        await append(stores[number % 2], "upload", chunk)
    assert sum(read.total for read in reads) < len(chunks) * PART
    assert len(uploads(stores[0])) == 1
    assert await stores[1].get("upload") == b"".join(chunks)
    assert leftovers(stores[0]) == []


@pytest.mark.parametrize("finish", ["commit", "close"])
async def test_a_failed_part_keeps_the_parts_before_it(s3_store: S3BlobStore, finish: str) -> None:
    """The part after it is never uploaded: RGW would not complete the upload without it."""

    def fail_the_second(params: dict[str, object], **_: object) -> None:
        if params.get("PartNumber") == 2:
            raise ConnectionError("part 2 lost")

    event = "before-parameter-build.s3.UploadPart"
    s3_store.client.meta.events.register(event, fail_the_second)
    data = os.urandom(3 * PART + MIB)
    writer = await s3_store.writer("upload")
    with contextlib.suppress(ConnectionError):  # seen when the third part would start
        for start in range(0, len(data), MIB):
            await writer.write(data[start : start + MIB])
    if finish == "commit":
        with pytest.raises(StorageError, match="part 2 failed"):
            await writer.commit()
    else:
        await writer.close()
    s3_store.client.meta.events.unregister(event, fail_the_second)
    assert part_sizes(s3_store) == [PART]
    assert await s3_store.stat("upload") == PART
    await write_chunks(s3_store, "upload", b"again", 5, PART)
    assert await s3_store.get("upload") == data[:PART] + b"again"
    assert leftovers(s3_store) == []


@pytest.mark.parametrize("keep", [7 * MIB, 6 * MIB], ids=["whole-tail", "part-of-the-tail"])
async def test_another_process_copies_a_large_tail_into_a_part(
    s3_server: S3Server, keep: int
) -> None:
    """A tail too short for an 8 MiB part but long enough for a part of its own is copied into
    one server-side, not read back, by a process that does not have it in memory."""
    first = s3_server.store(part_size=8 * MIB)
    data = os.urandom(7 * MIB)
    await write_chunks(first, "upload", data, MIB)
    other = s3_server.store(first.prefix, part_size=8 * MIB)
    read = BytesRead(other)
    writer = await other.writer("upload", keep)
    assert writer.size == keep
    await writer.write(b"more")
    await writer.close()
    assert read.total == 0
    assert part_sizes(other) == [keep]
    assert await first.stat("upload") == keep + 4
    assert await first.get("upload") == data[:keep] + b"more"
    assert leftovers(first) == []


@pytest.mark.parametrize(
    ("finished", "offset"),
    [
        (False, 10 * MIB + 7),  # in the tail
        (False, 10 * MIB),  # at the end of the parts
        (False, 5 * MIB),  # at the end of the first part: completed, then copied
        (False, 7 * MIB),  # inside the second part: completed, then copied
        (False, 3 * MIB),  # inside the first part: completed, then read back
        (True, 12 * MIB),  # at the end of a finished object: copied
        (True, 6 * MIB + 1),
        (True, 2 * MIB),  # too short for a part: read back
    ],
)
async def test_resume_drops_what_is_past_the_offset(
    s3_store: S3BlobStore, finished: bool, offset: int
) -> None:
    data = os.urandom(12 * MIB)
    if finished:
        await s3_store.put("upload", data)
    else:
        await write_chunks(s3_store, "upload", data, 3 * MIB)
    writer = await s3_store.writer("upload", offset)
    assert writer.size == offset
    await writer.write(b"new")
    await writer.commit()
    assert await s3_store.stat("upload") == offset + 3
    assert await s3_store.get("upload") == data[:offset] + b"new"
    assert leftovers(s3_store) == []


async def test_resume_at_a_part_boundary_before_later_parts(s3_store: S3BlobStore) -> None:
    """RGW completes no upload without all of its parts: the parts past the offset are left
    out by completing the upload, then copying its first bytes into a new one."""
    data = os.urandom(16 * MIB)
    await write_chunks(s3_store, "upload", data, MIB)
    writer = await s3_store.writer("upload", PART)
    await writer.write(b"new")
    await writer.commit()
    assert await s3_store.get("upload") == data[:PART] + b"new"
    assert leftovers(s3_store) == []


async def test_move_above_max_copy_size_copies_in_parts(s3_server: S3Server) -> None:
    store = s3_server.store(part_size=PART, copy_part_size=PART, max_copy_size=6 * MIB)
    data = os.urandom(12 * MIB)
    await store.put("uploads/one", data)
    await store.move("uploads/one", "blobs/one")
    assert etag(store, "blobs/one").endswith('-2"')
    assert await store.get("blobs/one") == data
    with pytest.raises(NotFound):
        await store.stat("uploads/one")
    assert leftovers(store) == []


async def test_move_of_an_unfinished_object_with_parts(s3_store: S3BlobStore) -> None:
    data = os.urandom(7 * MIB)
    await write_chunks(s3_store, "uploads/one", data, MIB)
    await s3_store.move("uploads/one", "blobs/one")
    assert await s3_store.get("blobs/one") == data
    assert await keys_under(s3_store, "uploads") == []
    assert object_names(s3_store) == [s3_store.prefix + "blobs/one"]
    assert uploads(s3_store) == []


async def test_move_of_a_source_taken_meanwhile_is_not_found(
    s3_server: S3Server, s3_store: S3BlobStore
) -> None:
    """As when two requests close one upload at once: the first moves it, the second finds
    nothing to move."""
    await write_chunks(s3_store, "uploads/one", b"abc", 3)
    other = s3_server.store(s3_store.prefix)

    def take_it(**_: object) -> None:
        other.client.delete_object(Bucket=other.bucket, Key=other.prefix + "uploads/one" + TAIL)

    s3_store.client.meta.events.register("before-call.s3.CopyObject", take_it)
    with pytest.raises(NotFound):
        await s3_store.move("uploads/one", "blobs/one")
    assert object_names(s3_store) == []


async def test_move_onto_itself_keeps_the_object(s3_store: S3BlobStore) -> None:
    await s3_store.put("blobs/one", b"kept")
    await s3_store.move("blobs/one", "blobs/one")
    assert await s3_store.get("blobs/one") == b"kept"
    with pytest.raises(NotFound):
        await s3_store.move("blobs/two", "blobs/two")


async def test_a_tail_is_no_key_and_is_listed_as_its_object(s3_store: S3BlobStore) -> None:
    await write_chunks(s3_store, "dir/a", b"abc", 3)
    assert object_names(s3_store) == [s3_store.prefix + "dir/a" + TAIL]
    assert await keys_under(s3_store, "dir") == ["dir/a"]
    assert await keys_under(s3_store, "dir/a") == ["dir/a"]
    with pytest.raises(InvalidKey):
        await s3_store.stat("dir/a" + TAIL)


async def test_a_finished_object_wins_over_a_tail_left_by_a_crash(s3_store: S3BlobStore) -> None:
    await write_chunks(s3_store, "dir/a", os.urandom(6 * MIB), MIB)
    # As if a worker died after completing the upload, before deleting the tail.
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=s3_store.prefix + "dir/a", Body=b"new")
    assert await s3_store.stat("dir/a") == 3
    assert await s3_store.get("dir/a") == b"new"
    assert await keys_under(s3_store, "dir") == ["dir/a"]
    assert leftovers(s3_store) == [f"stale tail {s3_store.prefix}dir/a{TAIL}"]
    await s3_store.put("dir/a", b"newer")
    assert leftovers(s3_store) == []
    assert uploads(s3_store) == []


async def test_delete_aborts_multipart_uploads_under_the_key(s3_store: S3BlobStore) -> None:
    await write_chunks(s3_store, "dir/closed", os.urandom(6 * MIB), MIB)
    writer = await s3_store.writer("dir/sub/open")  # as if its worker had died while writing
    await writer.write(os.urandom(6 * MIB))
    await s3_store.put("dirt", b"x")
    assert len(uploads(s3_store)) == 2
    await s3_store.delete("dir")
    assert uploads(s3_store) == []
    assert object_names(s3_store) == [s3_store.prefix + "dirt"]


async def test_presigned_url_gets_the_object_without_credentials(s3_store: S3BlobStore) -> None:
    data = os.urandom(1000)
    await s3_store.put("blobs/one", data)
    url = s3_store.presigned_url("blobs/one", expires=60)
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        assert (response.status_code, response.content) == (200, data)
        ranged = await client.get(url, headers={"Range": "bytes=10-19"})
        assert (ranged.status_code, ranged.content) == (206, data[10:20])
        forged = await client.get(url.replace("blobs/one", "blobs/two"))
        assert forged.status_code == 403
        missing = await client.get(s3_store.presigned_url("blobs/two"))
        assert missing.status_code == 404
    with pytest.raises(InvalidKey):
        s3_store.presigned_url("../one")


def s3_settings(server: S3Server, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "storage": "s3",
        "storage_path": server.new_prefix(),
        "s3_bucket": server.bucket,
        "s3_endpoint_url": server.endpoint_url,
        "s3_region": server.region,
        "s3_access_key": server.access_key,
        "s3_secret_key": server.secret_key,
        "s3_part_size": "5MiB",
        "database_url": f"sqlite:///{tmp_path / 'registry.db'}",
        "workers": 1,
    }
    return Settings.model_validate(values | overrides)


def test_settings_build_the_s3_driver(tmp_path: Path) -> None:
    settings = Settings(
        storage="s3",
        storage_path=Path("/registry"),
        s3_bucket="images",
        boto_host="rgw.example",
        boto_port=7480,
        s3_secure=False,
        s3_part_size=16 * MIB,
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
    )
    store = STORAGE_DRIVERS["s3"](settings)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("images", "registry/")
    assert store.client.meta.endpoint_url == "http://rgw.example:7480"
    assert store.client.meta.config.s3 == {"addressing_style": "path"}


async def test_chunked_upload_spread_over_two_instances(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """Two registries sharing the bucket and the metadata database, as scale-out runs: each
    chunk may land on either, and the blob comes back whole from both."""
    settings = s3_settings(s3_server, tmp_path)
    upgrade(settings.metadata_url)
    data = os.urandom(13 * MIB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    chunks = [(start, data[start : start + 3 * MIB]) for start in range(0, len(data), 3 * MIB)]
    base = "http://registry.test"
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(create_app(settings)), base_url=base) as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(create_app(settings)), base_url=base) as b,
    ):
        started = await a.post("/v2/team/app/blobs/uploads/")
        assert started.status_code == 202
        location = started.headers["location"]
        for number, (start, chunk) in enumerate(chunks):
            client = (a, b)[number % 2]
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(chunk) - 1}",
            }
            response = await client.patch(location, content=chunk, headers=headers)
            assert response.status_code == 202, response.text
            location = response.headers["location"]
        finished = await b.put(location, params={"digest": digest})
        assert finished.status_code == 201, finished.text
        for client in (a, b):
            response = await client.get(f"/v2/team/app/blobs/{digest}")
            assert (response.status_code, response.content == data) == (200, True)
    store = s3_server.store(str(settings.storage_path))
    assert await keys_under(store, "uploads") == []
    assert leftovers(store) == []
