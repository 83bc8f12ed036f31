"""The blob store contract on TimedBlobStore (over the filesystem driver): timing every call
changes nothing of what the calls do; and each call is timed under its action."""

from __future__ import annotations

from pathlib import Path

import pytest
from blob_store import BlobStoreContract

from portside.metrics import storage as metrics
from portside.storage.base import BlobStore, NotFound
from portside.storage.filesystem import FilesystemBlobStore
from portside.storage.timed import TimedBlobStore


class TestTimedBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> BlobStore:
        return TimedBlobStore(FilesystemBlobStore(tmp_path / "blobs"), "test")

    async def leftovers(self, store: BlobStore) -> list[str]:
        assert isinstance(store, TimedBlobStore)
        assert isinstance(store.store, FilesystemBlobStore)
        root = store.store.root
        return sorted(str(path.relative_to(root)) for path in root.rglob(".*"))


def observations(action: str) -> int:
    counts, _ = metrics.action_seconds.labels("timing-test", action).snapshot()
    return sum(counts)


async def test_each_call_is_timed_once_under_its_action_failures_too(tmp_path: Path) -> None:
    store = TimedBlobStore(FilesystemBlobStore(tmp_path), "timing-test")
    await store.put("a/b", b"x" * 10)
    await store.get("a/b")
    await store.stat("a/b")
    assert [chunk async for chunk in store.read("a/b")] == [b"x" * 10]
    assert [key async for key in store.list("a")] == ["a/b"]
    with pytest.raises(NotFound):
        await store.get("a/none")
    with pytest.raises(NotFound):
        [chunk async for chunk in store.read("a/none")]

    assert {action: observations(action) for action in ("put", "get", "stat", "read", "list")} == {
        "put": 1,
        "get": 2,
        "stat": 1,
        "read": 2,
        "list": 1,
    }
