"""Each namespace's usage as the triggers of 0013 keep it, on SQLite and PostgreSQL: equal to a
fresh scan of links, manifests and tags after any sequence of links, mounts, unlinks, pushes,
deletes of manifests, tags and repositories; and a quota checked in the manifest's transaction
lets exactly one of two pushes through when both together would exceed it, each through its own
engine (as two workers or instances are)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from portside.metadata.base import Footprint, Manifest, NamespaceLimits, OverQuota
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.registry.quotas import namespace_of
from postgres import schema

IMAGE = "application/vnd.oci.image.manifest.v1+json"
REPOSITORIES = ("team/a", "team/b", "team/b/deep", "teamx/a", "solo", "other")
BLOBS = {"base": 1000, "app": 10, "tool": 300, "big": 70000}
MANIFESTS = ("one", "two")
TAGS = ("v1", "v2", None)


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'metadata.db'}"
        return
    with schema(request.getfixturevalue("postgres_url")) as found:
        yield found


@pytest.fixture
def url(fresh_url: str) -> str:
    upgrade(fresh_url)
    return fresh_url


def migrate_to(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            config = Config()
            config.set_main_option(
                "script_location", str(files("portside.metadata") / "migrations")
            )
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Step:
    action: str
    repository: str
    name: str  # a blob, a manifest or a tag, by action
    tag: str | None = None


STEPS = st.one_of(
    st.builds(
        Step,
        st.sampled_from(["link", "unlink", "mount"]),
        st.sampled_from(REPOSITORIES),
        st.sampled_from(sorted(BLOBS)),
    ),
    st.builds(
        Step,
        st.sampled_from(["push", "delete_manifest"]),
        st.sampled_from(REPOSITORIES),
        st.sampled_from(MANIFESTS),
        st.sampled_from(TAGS),
    ),
    st.builds(
        Step,
        st.sampled_from(["delete_tag", "delete_repository"]),
        st.sampled_from(REPOSITORIES),
        st.sampled_from(["v1", "v2"]),
    ),
)


async def reserved(store: SqlMetadataStore, blob: str, size: int) -> str:
    token = uuid.uuid4().hex
    await store.reserve_blob(blob, size, token)
    return token


def manifest_of(repository: str, name: str) -> Manifest:
    # The same manifest in every repository: its digest counts once per namespace too.
    return Manifest(repository, digest(f"manifest:{name}"), IMAGE, 100 + len(name))


async def apply(store: SqlMetadataStore, step: Step) -> None:
    repository, name = step.repository, step.name
    if step.action == "link":
        blob = digest(name)
        await store.link_blob(
            repository, blob, BLOBS[name], await reserved(store, blob, BLOBS[name])
        )
    elif step.action == "unlink":
        await store.unlink_blob(repository, digest(name))
    elif step.action == "mount":  # from wherever the blob is linked, if it is
        for source in REPOSITORIES:
            if await store.mount_blob(repository, digest(name), source) is not None:
                break
    elif step.action == "push":
        manifest = manifest_of(repository, name)
        token = await reserved(store, manifest.digest, manifest.size)
        await store.put_manifest(manifest, [], step.tag, token)
    elif step.action == "delete_manifest":
        await store.delete_manifest(repository, manifest_of(repository, name).digest)
    elif step.action == "delete_tag":
        await store.delete_tag(repository, name)
    else:
        await store.delete_repository(repository)


def scanned(url: str) -> dict[str, Footprint]:
    """Every namespace's usage, counted afresh from the rows, with namespace_of in Python."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = dict(conn.execute(text("SELECT id, name FROM repositories")).all())
            links = conn.execute(
                text(
                    "SELECT l.repository_id, l.digest, b.size FROM repository_blobs l "
                    "JOIN blobs b ON b.digest = l.digest"
                )
            ).all()
            holding = conn.execute(text("SELECT DISTINCT repository_id FROM manifests")).all()
            tagged = conn.execute(text("SELECT repository_id FROM tags")).all()
    finally:
        engine.dispose()
    blobs: dict[str, dict[str, int]] = {}
    repositories: dict[str, int] = {}
    tags: dict[str, int] = {}
    for repository, blob, size in links:
        blobs.setdefault(namespace_of(names[repository]), {})[blob] = size
    for (repository,) in holding:
        namespace = namespace_of(names[repository])
        repositories[namespace] = repositories.get(namespace, 0) + 1
    for (repository,) in tagged:
        namespace = namespace_of(names[repository])
        tags[namespace] = tags.get(namespace, 0) + 1
    return {
        namespace: Footprint(
            sum(blobs.get(namespace, {}).values()),
            repositories.get(namespace, 0),
            tags.get(namespace, 0),
        )
        for namespace in {namespace_of(name) for name in REPOSITORIES}
    }


def stored(url: str) -> tuple[int, int]:
    """The stored blobs, counted afresh."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT count(*), COALESCE(sum(size), 0) FROM blobs WHERE state = 'stored'")
            ).one()
    finally:
        engine.dispose()
    return int(row[0]), int(row[1])


async def compare(store: SqlMetadataStore, url: str) -> None:
    assert await store.stored_blobs() == stored(url)
    expected = scanned(url)
    for namespace, footprint in expected.items():
        assert await store.namespace_footprint(namespace) == footprint, namespace
    holding = {n: f for n, f in expected.items() if f.repositories > 0}
    assert await store.namespace_footprints() == holding
    usage = {u.namespace: (u.repositories, u.size) for u in await store.namespace_usage()}
    assert usage == {n: (f.repositories, f.bytes) for n, f in holding.items()}


def test_counters_equal_a_fresh_scan_after_any_writes(url: str) -> None:
    store = SqlMetadataStore(url)

    # The store is kept across examples: each sequence starts where the last one left off.
    @settings(max_examples=30, deadline=None)
    @given(st.lists(STEPS, min_size=1, max_size=25))
    def writes(steps: list[Step]) -> None:
        async def run() -> None:
            for step in steps:
                await apply(store, step)
            await compare(store, url)

        asyncio.run(run())

    try:
        writes()
    finally:
        asyncio.run(store.close())


async def test_stored_blob_totals_follow_each_blob_in_and_out_of_stored(url: str) -> None:
    store = SqlMetadataStore(url)
    engine = create_engine(url)
    try:
        for name, size in BLOBS.items():
            await store.reserve_blob(digest(name), size, uuid.uuid4().hex)  # pending: not stored
        assert await store.stored_blobs() == (0, 0)
        for step in [
            Step("link", "a", "base"),
            Step("link", "a", "tool"),
            Step("link", "b", "app"),
        ]:
            await apply(store, step)
        assert await store.stored_blobs() == (3, 1310)
        changes = [
            "UPDATE blobs SET state = 'deleting' WHERE digest = :base",  # a collector marks it
            "UPDATE blobs SET size = 7 WHERE digest = :app",
            "UPDATE blobs SET state = 'stored' WHERE digest = :big",
            "DELETE FROM repository_blobs WHERE digest = :tool",
            "DELETE FROM blobs WHERE digest = :tool",
        ]
        names = {name: digest(name) for name in BLOBS}
        for change in changes:
            with engine.begin() as conn:
                conn.execute(text(change), names)
            assert await store.stored_blobs() == stored(url), change
        assert await store.stored_blobs() == (2, 7 + 70000)
    finally:
        engine.dispose()
        await store.close()


async def test_the_migration_counts_what_was_there_before_it(fresh_url: str) -> None:
    migrate_to(fresh_url, "0012")
    store = SqlMetadataStore(fresh_url)
    try:
        for step in [
            Step("link", "team/a", "base"),
            Step("link", "team/b", "base"),
            Step("link", "solo", "tool"),
            Step("push", "team/a", "one", "v1"),
            Step("push", "team/b", "two", "v2"),
            Step("push", "team/b", "one", None),
            Step("link", "teamx/a", "big"),
        ]:
            await apply(store, step)

        upgrade(fresh_url)

        await compare(store, fresh_url)
        team = await store.namespace_footprint("team")
        assert team == Footprint(1000 + 103 + 103, 2, 2)  # "one" is in both: counted once
    finally:
        await store.close()


async def push_within(
    store: SqlMetadataStore, repository: str, limits: NamespaceLimits
) -> OverQuota | None:
    """A manifest of 600 bytes pushed under limits: its refusal, if refused."""
    manifest = Manifest(repository, digest(repository), IMAGE, 600)
    token = await reserved(store, manifest.digest, manifest.size)
    try:
        await store.put_manifest(manifest, [], "v1", token, limits=limits)
    except OverQuota as over:
        return over
    return None


async def test_two_pushes_at_once_over_a_quota_let_exactly_one_through(url: str) -> None:
    """Ten rounds, each in a namespace of its own holding a layer of 1000 bytes, with two
    manifests of 600 bytes pushed into two of its repositories at once, each through its own
    store, under a quota of 1900 bytes: room for one of them, not both."""
    stores = [SqlMetadataStore(url), SqlMetadataStore(url)]
    try:
        for n in range(10):
            namespace = f"race{n}"
            base = digest("base")
            token = await reserved(stores[0], base, 1000)
            await stores[0].link_blob(f"{namespace}/base", base, 1000, token)
            limits = NamespaceLimits(namespace, 1900, None, None)
            repositories = [f"{namespace}/one", f"{namespace}/two"]

            refusals = await asyncio.gather(
                *(push_within(s, r, limits) for s, r in zip(stores, repositories, strict=True))
            )

            refused = [over for over in refusals if over is not None]
            assert len(refused) == 1, f"round {n}: {len(refused)} of 2 refused"
            over = refused[0]
            assert (over.what, over.used, over.limit, over.adding) == ("bytes", 1600, 1900, 600)
            assert (await stores[1].namespace_footprint(namespace)).bytes == 1600
    finally:
        for store in stores:
            await store.close()


async def test_a_push_adding_nothing_passes_a_namespace_over_its_limit(url: str) -> None:
    store = SqlMetadataStore(url)
    try:
        manifest = Manifest("team/app", digest("app"), IMAGE, 500)
        await store.put_manifest(manifest, [], "v1", await reserved(store, manifest.digest, 500))
        limits = NamespaceLimits("team", 100, 1, 1)  # lowered below what it holds

        again = await reserved(store, manifest.digest, 500)
        await store.put_manifest(manifest, [], "v1", again, limits=limits)  # adds nothing
        other = Manifest("team/app", digest("other"), IMAGE, 10)
        with pytest.raises(OverQuota) as refused:
            await store.put_manifest(
                other, [], None, await reserved(store, other.digest, 10), limits=limits
            )

        assert (refused.value.what, refused.value.used, refused.value.adding) == ("bytes", 500, 10)
        assert await store.get_manifest("team/app", other.digest) is None  # nothing stored
        assert await store.namespace_footprint("team") == Footprint(500, 1, 1)
    finally:
        await store.close()
