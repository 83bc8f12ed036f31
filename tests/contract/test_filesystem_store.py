"""The blob store contract on FilesystemBlobStore, then what only a filesystem shows: temporary
files, folders, local paths, and several workers sharing one root."""

from __future__ import annotations

import asyncio
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from blob_store import INVALID_KEYS, BlobStoreContract, calls_with_key, keys_under

from portside.storage.base import BlobStore, InvalidKey, NotFound
from portside.storage.filesystem import TEMP_PREFIX, FilesystemBlobStore


class TestFilesystemBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return FilesystemBlobStore(tmp_path / "blobs")

    async def leftovers(self, store: BlobStore) -> list[str]:
        assert isinstance(store, FilesystemBlobStore)
        return temporary_files(store)


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


def temporary_files(store: FilesystemBlobStore) -> list[str]:
    return sorted(str(path.relative_to(store.root)) for path in store.root.rglob(".*"))


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def list_from_another_thread(store: FilesystemBlobStore, prefix: str) -> list[str]:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, keys_under(store, prefix)).result()


@pytest.mark.parametrize("existing", [None, b"old" * 1000], ids=["new-key", "existing-key"])
async def test_put_shows_no_temporary_file_under_the_final_key(
    store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch, existing: bytes | None
) -> None:
    final = store.root / "dir" / "object"
    if existing is not None:
        await store.put("dir/object", existing)
    seen: list[tuple[list[str], bytes | None, list[str]]] = []
    fdatasync = os.fdatasync

    def probe(fd: int) -> None:
        fdatasync(fd)
        # The new bytes are complete in the temporary file; the rename has not happened yet.
        under_final = final.read_bytes() if final.exists() else None
        seen.append((temporary_files(store), under_final, list_from_another_thread(store, "dir")))

    monkeypatch.setattr(os, "fdatasync", probe)
    await store.put("dir/object", b"new" * 1000)
    monkeypatch.undo()

    [(temporaries, under_final, listed)] = seen
    assert len(temporaries) == 1
    assert temporaries[0].startswith(f"dir/{TEMP_PREFIX}")
    assert under_final == existing
    assert listed == ([] if existing is None else ["dir/object"])
    assert final.read_bytes() == b"new" * 1000
    assert temporary_files(store) == []


async def test_failed_put_keeps_the_old_object_and_no_temporary_file(
    store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put("dir/object", b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    with pytest.raises(OSError, match="No space"):
        await store.put("dir/object", b"new")
    monkeypatch.undo()
    assert await store.get("dir/object") == b"old"
    assert temporary_files(store) == []


async def test_temporary_files_of_a_crashed_put_are_never_listed(
    store: FilesystemBlobStore,
) -> None:
    await store.put("dir/object", b"x")
    (store.root / "dir" / f"{TEMP_PREFIX}dead").write_bytes(b"partial")
    assert await keys_under(store, "dir") == ["dir/object"]
    with pytest.raises(InvalidKey):
        await store.stat(f"dir/{TEMP_PREFIX}dead")


async def test_invalid_keys_touch_nothing(store: FilesystemBlobStore, tmp_path: Path) -> None:
    for key in INVALID_KEYS:
        for call in calls_with_key(store, key):
            with pytest.raises(InvalidKey):
                await call()
    assert tree(tmp_path) == ["blobs"]


async def test_local_path_is_the_file(store: FilesystemBlobStore) -> None:
    await store.put("blobs/sha256/ab/abcd", b"contents")
    path = store.local_path("blobs/sha256/ab/abcd")
    assert path == store.root / "blobs" / "sha256" / "ab" / "abcd"
    assert path.read_bytes() == b"contents"
    await store.move("blobs/sha256/ab/abcd", "moved/here")
    assert store.local_path("moved/here").read_bytes() == b"contents"


async def test_no_redirect_url_since_the_server_sends_the_file(
    store: FilesystemBlobStore,
) -> None:
    await store.put("blobs/one", b"x")
    assert store.redirect_url("blobs/one", 60) is None


async def test_delete_leaves_no_empty_folders(store: FilesystemBlobStore) -> None:
    await store.put("a/b/c/object", b"x")
    await store.delete("a/b/c/object")
    await store.put("f/g/h", b"x")
    await store.delete("f/g")
    assert tree(store.root) == []


async def test_failed_move_leaves_no_folders(store: FilesystemBlobStore) -> None:
    await store.put("src/object", b"x")
    await store.delete("src/object")
    with pytest.raises(NotFound):
        await store.move("src/object", "new/deep/dst")
    assert tree(store.root) == []


def test_workers_writing_and_deleting_in_shared_folders_do_not_collide(
    store: FilesystemBlobStore,
) -> None:
    # Threads with their own event loops stand in for worker processes: a delete prunes the
    # folders it empties while another worker is about to create a file in them.
    async def work(name: str) -> None:
        for _ in range(150):
            await store.put(f"blobs/ab/{name}", b"x")
            writer = await store.writer(f"uploads/{name}")
            await writer.close()
            await store.move(f"uploads/{name}", f"moved/ab/{name}")
            await store.delete(f"blobs/ab/{name}")
            await store.delete(f"moved/ab/{name}")

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(asyncio.run, work(f"worker{i}")) for i in range(4)]:
            done.result()
    assert [path for path in store.root.rglob("*") if path.is_file()] == []
