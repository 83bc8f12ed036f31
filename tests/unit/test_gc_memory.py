"""The collector streams: its peak memory, measured with tracemalloc, is the same for a registry
ten times larger (within the noise of garbage cycles not yet freed). The stores are fakes that
make up their rows as they are asked for them (one repository with garbage of every kind per
repository), so only what the collector holds counts; then the same through a SQLite store
filled in bulk, which counts what its queries return and its batched deletions take.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, create_engine, insert

from portside.metadata.base import Lease, ManifestCandidate
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.metadata.tables import (
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
)
from portside.registry import gc, keys
from portside.registry.gc import Collector, Policy, Summary
from portside.registry.names import Digest
from portside.storage.base import ObjectInfo

OLD = datetime.now(UTC) - timedelta(days=2)


def digest(kind: int, n: int) -> str:
    return f"sha256:{kind:02x}{n:062x}"


class Metadata:
    """A registry of `size` repositories, each with a garbage manifest, a garbage link and a
    garbage blob; half of the bytes in storage have records."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)  # a method the collector should not need

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> Lease:
        return Lease(name, holder, datetime.now(UTC) + ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        pass

    async def repository_names(self, after: str | None, limit: int) -> list[str]:
        start = 0 if after is None else int(after.removeprefix("r")) + 1
        return [f"r{n:09}" for n in range(start, min(start + limit, self.size))]

    async def manifest_candidates(
        self, repositories: Collection[str], before: datetime
    ) -> list[ManifestCandidate]:
        return [
            ManifestCandidate(name, digest(1, int(name[1:])), None, (), ()) for name in repositories
        ]

    async def delete_manifests(
        self, garbage: Mapping[str, Collection[str]], *_: Any
    ) -> dict[str, list[str]]:
        return {name: sorted(digests) for name, digests in garbage.items()}

    async def dangling_tags(self, repositories: Collection[str]) -> dict[str, list[str]]:
        return {}

    async def delete_dangling_tags(self, repositories: Collection[str]) -> dict[str, list[str]]:
        return {}

    async def unreferenced_links(
        self, repositories: Collection[str], before: datetime
    ) -> dict[str, list[str]]:
        return {name: [digest(2, int(name[1:]))] for name in repositories}

    async def delete_links(
        self, links: Mapping[str, Collection[str]], _: datetime
    ) -> dict[str, list[str]]:
        return {name: sorted(digests) for name, digests in links.items()}

    async def drop_reservations(self, before: datetime) -> int:
        return 0

    async def garbage_blobs(
        self, before: datetime, reserved_since: datetime, after: str | None, limit: int
    ) -> dict[str, int]:
        start = 0 if after is None else int(after.partition(":")[2][2:], 16) + 1
        return {digest(3, n): 10 for n in range(start, min(start + limit, self.size))}

    async def mark_blobs(self, digests: Collection[str], *_: Any) -> dict[str, int]:
        return dict.fromkeys(digests, 10)

    async def forget_blobs(self, digests: Collection[str], token: str) -> None:
        pass

    async def recorded_blobs(self, digests: Collection[str]) -> set[str]:
        return {d for d in digests if int(d[-1], 16) % 2}

    async def claim_orphans(self, sizes: Mapping[str, int], token: str) -> list[str]:
        return sorted(sizes)

    async def upload_sessions(self, ids: Collection[str]) -> dict[str, datetime]:
        return {}

    async def expired_uploads(self, before: datetime, after: str | None, limit: int) -> list[str]:
        return []

    async def record_collection(self, run: Any) -> None:
        pass


class Storage:
    def __init__(self, size: int) -> None:
        self.size = size

    async def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        if prefix == keys.BLOBS:
            for n in range(self.size):
                yield ObjectInfo(keys.blob(Digest.parse(digest(4, n))), 10, OLD)

    async def delete(self, key: str) -> None:
        pass


def peak(size: int) -> tuple[int, Summary]:
    collector = Collector(Storage(size), Metadata(size), Policy(untagged="collect"))  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        summary = asyncio.run(collector.collect())
        return tracemalloc.get_traced_memory()[1], summary
    finally:
        tracemalloc.stop()


def test_the_collectors_peak_memory_does_not_grow_with_the_registry() -> None:
    small, done = peak(1_000)
    assert (done.manifests, done.links, done.blobs, done.orphans) == (1_000, 1_000, 1_000, 500)
    large, done = peak(10_000)
    assert (done.manifests, done.links, done.blobs, done.orphans) == (10_000,) * 3 + (5_000,)
    # Holding a row per repository, 9,000 more repositories would take a megabyte more, or more.
    assert large < small * 1.5, (small, large)


def fill(url: str, size: int) -> None:
    """size repositories in a SQLite registry, each with an old untagged manifest (garbage under
    `gc_untagged: collect`) referencing a layer of its own, and a link to a blob that nothing
    references: a crashed push's."""
    upgrade(url)
    engine = create_engine(url)
    rows: dict[Table, list[dict[str, Any]]] = defaultdict(list)
    for n in range(1, size + 1):
        manifest, layer, stray = digest(5, n), digest(6, n), digest(7, n)
        rows[repositories].append({"id": n, "name": f"r{n:09}", "created_at": OLD})
        for blob in (manifest, layer, stray):
            rows[blobs].append({"digest": blob, "size": 10, "created_at": OLD})
            rows[repository_blobs].append({"repository_id": n, "digest": blob, "created_at": OLD})
        rows[manifests].append(
            {
                "repository_id": n,
                "digest": manifest,
                "media_type": "m",
                "size": 10,
                "created_at": OLD,
            }
        )
        rows[manifest_references].append(
            {"repository_id": n, "manifest_digest": manifest, "digest": layer, "kind": "blob"}
        )
    with engine.begin() as conn:
        for table in (repositories, blobs, repository_blobs, manifests, manifest_references):
            conn.execute(insert(table), rows[table])
    engine.dispose()


def first(peak: tuple[int, Summary]) -> int:
    return peak[0]


def store_peak(root: Path, size: int) -> tuple[int, Summary]:
    root.mkdir()
    url = f"sqlite:///{root / 'registry.db'}"
    fill(url, size)
    metadata = SqlMetadataStore(url)
    # No blob objects: storage's part is the first test's; pathlib's interning would add noise.
    collector = Collector(Storage(0), metadata, Policy(untagged="collect"))  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        summary = asyncio.run(collector.collect())
        return tracemalloc.get_traced_memory()[1], summary
    finally:
        tracemalloc.stop()
        asyncio.run(metadata.close())


def test_the_stores_reads_and_deletions_hold_a_page_not_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through the SQLite store: what its queries return and its deletions take is a
    page's worth, whatever the registry's size. Pages of 50 repositories, so that both sizes
    are many pages; after a first run, so that neither pays for SQLAlchemy's compiled
    statements."""
    monkeypatch.setattr(gc, "REPOSITORY_PAGE", 50)
    store_peak(tmp_path / "first", 200)
    # The lower of two runs each: the writer thread, late on a busy machine, can hold a second
    # page's statements for a moment (a peak of 1.55 times seen once in five runs at load 6).
    small, done = min((store_peak(tmp_path / f"small-{n}", 200) for n in range(2)), key=first)
    assert (done.manifests, done.links, done.blobs) == (200, 400, 600)
    large, done = min((store_peak(tmp_path / f"large-{n}", 1_000) for n in range(2)), key=first)
    assert (done.manifests, done.links, done.blobs) == (1_000, 2_000, 3_000)
    # One page of all 1,000 repositories took 2.3 times the memory of 200 (pages of 50: 1.2).
    assert large < small * 1.5, (small, large)
