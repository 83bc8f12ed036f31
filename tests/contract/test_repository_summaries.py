"""What the web UI reads from the metadata store (BrowseStore, SessionStore, gc runs), on SQLite
and PostgreSQL: the repository summaries that triggers keep (0010) follow every kind of write,
keyset pages cover each row once in every order, and a pull's size counts each blob once."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from portside.metadata.base import (
    COLLECTION_RUNS_KEPT,
    CollectionRun,
    Manifest,
    Reference,
    ReferenceKind,
    RepositoryOrder,
    RepositoryRow,
    UiSession,
)
from portside.metadata.sql import SqlMetadataStore

IMAGE = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


async def push_blob(store: SqlMetadataStore, repository: str, name: str, size: int) -> str:
    blob = digest(name)
    token = uuid.uuid4().hex
    await store.reserve_blob(blob, size, token)
    await store.link_blob(repository, blob, size, token)
    return blob


async def push_image(
    store: SqlMetadataStore,
    repository: str,
    tag: str | None,
    blobs: dict[str, int],
    description: str | None = None,
    key: str = "",
) -> str:
    """An image manifest of 100 bytes referencing the named blobs (pushed first)."""
    references = [
        Reference(await push_blob(store, repository, name, size), ReferenceKind.BLOB)
        for name, size in blobs.items()
    ]
    manifest = Manifest(
        repository, digest(f"{repository}:{tag}:{key}"), IMAGE, 100, description=description
    )
    token = uuid.uuid4().hex
    await store.reserve_blob(manifest.digest, manifest.size, token)
    await store.put_manifest(manifest, references, tag, token)
    return manifest.digest


async def row(store: SqlMetadataStore, name: str) -> RepositoryRow:
    found = await store.repository_row(name)
    assert found is not None
    return found


async def test_size_counts_each_linked_blob_once_and_follows_unlinks(
    store: SqlMetadataStore,
) -> None:
    await push_image(store, "team/a", "v1", {"base": 1000, "app": 10})
    await push_image(store, "team/a", "v2", {"base": 1000, "app2": 20}, key="2")
    assert (await row(store, "team/a")).size == 1000 + 10 + 20 + 100 + 100
    stray = await push_blob(store, "team/a", "stray", 5)
    assert (await row(store, "team/a")).size == 1235
    assert await store.unlink_blob("team/a", stray)
    assert (await row(store, "team/a")).size == 1230
    await push_image(store, "team/b", "v1", {"base": 1000})
    assert (await row(store, "team/b")).size == 1100  # the shared layer counts in both


async def test_last_push_follows_pushes_and_tag_moves(store: SqlMetadataStore) -> None:
    first = await push_image(store, "a", "v1", {"x": 1})
    pushed = (await row(store, "a")).pushed_at
    assert pushed is not None
    assert abs(pushed - datetime.now(UTC)) < timedelta(minutes=1)
    await push_image(store, "a", "v2", {"x": 1}, key="2")
    moved = (await row(store, "a")).pushed_at
    assert moved is not None
    assert moved > pushed
    token = uuid.uuid4().hex
    await store.reserve_blob(first, 100, token)
    await store.put_manifest(Manifest("a", first, IMAGE, 100), [], "v2", token)  # a tag moves
    retagged = (await row(store, "a")).pushed_at
    assert retagged is not None
    assert retagged > moved


async def test_description_is_the_newest_and_outlives_a_newer_manifest_deleted(
    store: SqlMetadataStore,
) -> None:
    await push_image(store, "a", "v1", {"x": 1}, description="first")
    newer = await push_image(store, "a", "v2", {"x": 1}, description="second", key="2")
    await push_image(store, "a", "v3", {"x": 1}, key="3")  # none: the newest described stays
    assert (await row(store, "a")).description == "second"
    assert await store.delete_manifest("a", newer)
    assert (await row(store, "a")).description == "first"


async def pages(store: SqlMetadataStore, order: RepositoryOrder, text: str = "") -> list[str]:
    names: list[str] = []
    after = None
    while rows := await store.repository_rows(order, text, after, 2):
        names += [found.name for found in rows]
        after = rows[-1]
    return names


async def test_keyset_pages_cover_every_repository_once_in_each_order(
    store: SqlMetadataStore,
) -> None:
    sizes = {"b/one": 30, "a/two": 10, "c": 20, "a/three": 20, "d/four": 50}
    for name, size in sizes.items():
        await push_image(store, name, "latest", {f"layer-{name}": size})
    await push_blob(store, "no/manifest", "stray", 5)  # not listed: it holds no manifest
    assert await pages(store, RepositoryOrder.NAME) == sorted(sizes)
    by_size = await pages(store, RepositoryOrder.SIZE)
    assert by_size[0] == "d/four"
    assert by_size[-1] == "a/two"
    assert sorted(by_size) == sorted(sizes)
    assert await pages(store, RepositoryOrder.PUSHED) == list(reversed(sizes))
    assert await pages(store, RepositoryOrder.NAME, "A/T") == ["a/three", "a/two"]


async def test_search_matches_descriptions_and_takes_wildcards_literally(
    store: SqlMetadataStore,
) -> None:
    await push_image(store, "web", "v1", {"x": 1}, description="The 100% Web Server")
    await push_image(store, "db", "v1", {"y": 1}, description="a database")
    assert await pages(store, RepositoryOrder.NAME, "web server") == ["web"]
    assert await pages(store, RepositoryOrder.NAME, "100%") == ["web"]
    assert await pages(store, RepositoryOrder.NAME, "_") == []
    assert await pages(store, RepositoryOrder.NAME, "\x00") == []


async def test_tag_pages_and_the_bytes_a_pull_moves(store: SqlMetadataStore) -> None:
    amd64 = await push_image(store, "multi", None, {"base": 1000, "amd": 10}, key="amd64")
    arm64 = await push_image(store, "multi", None, {"base": 1000, "arm": 20}, key="arm64")
    children = [Reference(amd64, ReferenceKind.MANIFEST), Reference(arm64, ReferenceKind.MANIFEST)]
    index = Manifest("multi", digest("index"), INDEX, 300)
    token = uuid.uuid4().hex
    await store.reserve_blob(index.digest, index.size, token)
    await store.put_manifest(index, children, "latest", token)
    for tag in ("a", "b", "c"):
        await push_image(store, "multi", tag, {"base": 1000}, key=tag)
    first = await store.tag_rows("multi", None, 2)
    rest = await store.tag_rows("multi", first[-1].name, 10)
    assert [t.name for t in first + rest] == ["a", "b", "c", "latest"]
    assert rest[-1].digest == index.digest
    assert rest[-1].media_type == INDEX
    sizes = await store.pull_sizes("multi", [index.digest, amd64, digest("unknown")])
    assert sizes == {index.digest: 300 + 100 + 100 + 1000 + 10 + 20, amd64: 100 + 1010}
    assert await store.tags_on("multi", index.digest) == ["latest"]
    assert await store.tag_rows("nothing", None, 10) == []


async def test_namespace_usage_counts_a_blob_shared_by_its_repositories_once(
    store: SqlMetadataStore,
) -> None:
    await push_image(store, "team/a", "v1", {"base": 1000, "a": 1})
    await push_image(store, "team/b", "v1", {"base": 1000, "b": 2})
    await push_image(store, "solo", "v1", {"base": 1000})
    usage = {u.namespace: (u.repositories, u.size) for u in await store.namespace_usage()}
    assert usage == {"": (1, 1100), "team": (2, 1000 + 1 + 2 + 100 + 100)}
    count, stored = await store.stored_blobs()
    assert (count, stored) == (6, 1000 + 1 + 2 + 100 + 100 + 100)


async def test_sessions_are_found_by_hash_ended_and_pruned_once_expired(
    store: SqlMetadataStore,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old = UiSession("a" * 64, "alice", "c" * 64, now - timedelta(days=2), now - timedelta(days=1))
    await store.add_session(old)
    assert await store.find_session(old.token_hash) == old
    new = UiSession("b" * 64, "bob", "d" * 64, now, now + timedelta(hours=1))
    await store.add_session(new)
    assert await store.find_session(old.token_hash) is None  # pruned by the next login
    assert await store.delete_session(new.token_hash)
    assert not await store.delete_session(new.token_hash)
    assert await store.find_session(new.token_hash) is None


async def test_only_the_newest_collection_runs_are_kept(store: SqlMetadataStore) -> None:
    assert await store.last_collection() is None
    start = datetime.now(UTC).replace(microsecond=0)
    for n in range(COLLECTION_RUNS_KEPT + 3):
        run = CollectionRun(start + timedelta(seconds=n), 0.5, n, "[]")
        await store.record_collection(run)
    assert await store.last_collection() == run
