"""Search through the trigram index (0012), on SQLite and PostgreSQL: the index follows every
write that changes a name or description, both ways of finding matches (the index's few matches
sorted whole, or repositories walked in order) give the same pages, a search with `visible`
counts and lists no more than the cap, and on SQLite a search does as much work at 3,000
repositories as at 300."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Select, event, select

from portside.metadata import text_search
from portside.metadata.base import Manifest, RepositoryOrder, RepositoryRow, RepositorySummary
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.metadata.tables import repositories
from portside.metadata.text_search import matching
from portside.registry import discovery
from portside.registry.discovery import Discovery

IMAGE = "application/vnd.oci.image.manifest.v1+json"


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


async def push(store: SqlMetadataStore, repository: str, description: str | None, key: str) -> str:
    manifest = Manifest(
        repository, digest(f"{repository}:{key}"), IMAGE, 100, description=description
    )
    token = uuid.uuid4().hex
    await store.reserve_blob(manifest.digest, manifest.size, token)
    await store.put_manifest(manifest, [], key, token)
    return manifest.digest


# Names and descriptions where "app" matches 8 of 16 repositories (the descriptions of half of
# them too), in an order of names that differs from the order of their ids.
REPOSITORIES = {
    f"{team}/{kind}{n}": f"An {kind} of {team}" if n % 2 else None
    for n in range(4)
    for team, kind in [("zeta", "app"), ("alpha", "tool"), ("mid", "apple"), ("Beta", "lib")]
}
DESCRIBED_APP = [name for name, about in REPOSITORIES.items() if "app" in (about or "").lower()]


@pytest.fixture
async def filled(store: SqlMetadataStore) -> SqlMetadataStore:
    for n, (name, description) in enumerate(REPOSITORIES.items()):
        await push(store, name, description, f"v{n}")
    return store


def expected(text: str) -> list[str]:
    lowered = text.lower()
    return sorted(
        name
        for name, about in REPOSITORIES.items()
        if lowered in name.lower() or lowered in (about or "").lower()
    )


async def search_pages(store: SqlMetadataStore, text: str, size: int) -> list[str]:
    names: list[str] = []
    last = None
    while found := await store.search_repositories(text, last, size):
        names += [summary.name for summary in found]
        last = found[-1].name
    return names


async def row_pages(store: SqlMetadataStore, order: RepositoryOrder, text: str) -> list[str]:
    names: list[str] = []
    after: RepositoryRow | None = None
    while rows := await store.repository_rows(order, text, after, 3):
        names += [row.name for row in rows]
        after = rows[-1]
    return names


@pytest.mark.parametrize("sorted_max", [text_search.SORTED_MAX, 5])
async def test_sorted_matches_and_a_walk_in_order_give_the_same_pages(
    filled: SqlMetadataStore, sorted_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SORTED_MAX 5, "app" (8 matches) walks repositories in order; "apple" (4) and
    "tool" (4) are still sorted from the index; "ap" (2 characters) always walks."""
    monkeypatch.setattr(text_search, "SORTED_MAX", sorted_max)
    for text in ["app", "APP", "apple", "tool", "ap", "", "of zeta", "nothing"]:
        assert await search_pages(filled, text, 5) == expected(text), text
        assert await filled.count_search_matches(text, 100) == len(expected(text)), text
        assert await row_pages(filled, RepositoryOrder.NAME, text) == expected(text), text
        for order in (RepositoryOrder.SIZE, RepositoryOrder.PUSHED):
            # the same size, and pushed in the order of REPOSITORIES: newest first
            newest_first = [name for name in reversed(REPOSITORIES) if name in expected(text)]
            assert await row_pages(filled, order, text) == newest_first, (text, order)


async def test_the_index_follows_descriptions_and_deleted_repositories(
    store: SqlMetadataStore,
) -> None:
    async def found(text: str) -> list[str]:
        return [summary.name for summary in await store.search_repositories(text, None, 10)]

    await push(store, "team/app", "first words", "v1")
    newer = await push(store, "team/app", "second words", "v2")
    await push(store, "team/app", None, "v3")  # no description: the newest described stays
    assert await found("second wo") == ["team/app"]
    assert await found("first wo") == []
    assert await store.delete_manifest("team/app", newer)
    assert await found("first wo") == ["team/app"]
    assert await found("second wo") == []
    await push(store, "team/other", "first words too", "v1")
    assert await store.delete_repository("team/app") is not None
    assert await found("first wo") == ["team/other"]
    assert await found("team/app") == []
    await push(store, "team/app", None, "v4")  # the name again, with a new id
    assert await found("team/app") == ["team/app"]
    assert await found("first wo") == ["team/other"]
    if store.engine.dialect.name == "sqlite":
        # FTS5 compares its index with repositories, row by row: an error if they differ.
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO repository_search(repository_search, rank) "
                "VALUES ('integrity-check', 1)"
            )


async def test_a_search_with_visible_counts_and_lists_up_to_the_cap(
    filled: SqlMetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap at 3 and batches of 2: matches are read in name order until 4 are visible."""
    monkeypatch.setattr(discovery, "SEARCH_CAP", 3)
    monkeypatch.setattr(discovery, "SEARCH_BATCH", 2)
    search = Discovery(filled).search
    everything = await search("app", 1, 100)
    assert (everything.total, [found.name for found in everything.items]) == (
        3,
        expected("app")[:3],
    )

    def visible(name: str) -> bool:
        return name.startswith("zeta/")

    shown = [name for name in expected("app") if visible(name)]  # 4 of them, after 8 others
    pages = [await search("app", page, 2, visible) for page in (1, 2, 3)]
    assert [page.total for page in pages] == [3, 3, 3]
    assert [[found.name for found in page.items] for page in pages] == [shown[:2], shown[2:3], []]
    few = await search("apple", 1, 2, lambda name: name.endswith(("0", "1")))
    assert (few.total, [found.name for found in few.items]) == (2, ["mid/apple0", "mid/apple1"])
    described = await search("an app", 1, 10, lambda name: True)
    assert described.total == 3
    assert described.items == [
        RepositorySummary(name, REPOSITORIES[name]) for name in sorted(DESCRIBED_APP)[:3]
    ]


def explain(conn: Connection, command: str, query: Select[Any]) -> str:
    compiled = query.compile(dialect=conn.dialect)
    names = compiled.positiontup
    values = compiled.params if names is None else tuple(compiled.params[name] for name in names)
    return " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"{command} {compiled}", values))


async def test_the_trigram_index_serves_a_search(store: SqlMetadataStore) -> None:
    """The plan of a search's count reads the index: SQLite's FTS5 table; PostgreSQL's GIN
    indexes, once a sequential scan is ruled out (on a table this small it is cheaper)."""
    found = select(repositories.c.id).where(matching("app"))
    query = store._through_index(found, "app")
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            plan = explain(conn, "EXPLAIN QUERY PLAN", query)
            assert "repository_search VIRTUAL TABLE" in plan, plan
            return
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = explain(conn, "EXPLAIN", query)
    assert "ix_repositories_name_trgm" in plan, plan
    assert "ix_repositories_description_trgm" in plan, plan


def fill_sqlite(path: Path, count: int) -> None:
    """count repositories, each with one manifest, every tenth described, straight into SQLite
    (the triggers keep the index): pushes one by one would take minutes."""
    at = datetime(2026, 1, 1, tzinfo=UTC).isoformat(sep=" ")
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO repositories (id, name, created_at) VALUES (?, ?, ?)",
            [(n + 1, f"scale/r{n:06d}", at) for n in range(count)],
        )
        conn.executemany(
            "INSERT INTO manifests (repository_id, digest, media_type, size, created_at, "
            "description) VALUES (?, ?, ?, 100, ?, ?)",
            [
                (n + 1, digest(str(n)), IMAGE, at, f"image number {n:06d}" if n % 10 == 0 else None)
                for n in range(count)
            ],
        )


# Below both sizes measured, as the cap (1,000) is below 100,000 repositories.
CAP = 100


async def sqlite_steps(tmp_path: Path, count: int) -> dict[str, int]:
    """The virtual machine instructions SQLite runs for each search, at count repositories."""
    path = tmp_path / f"{count}.db"
    upgrade(f"sqlite:///{path}")
    fill_sqlite(path, count)
    store = SqlMetadataStore(f"sqlite:///{path}")
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    def on_connect(dbapi_connection: Any, _: object) -> None:
        dbapi_connection.set_progress_handler(step, 1)

    event.listen(store.engine, "connect", on_connect)
    one = "r000150"
    searches = {
        "count, one match": lambda: store.count_search_matches(one, CAP),
        "page, one match": lambda: store.search_repositories(one, None, 25),
        "count, every repository": lambda: store.count_search_matches("scale", CAP),
        "page, every repository": lambda: store.search_repositories("scale", None, 25),
        "count, a description": lambda: store.count_search_matches("number 000150", CAP),
        "rows by name, one match": lambda: store.repository_rows(
            RepositoryOrder.NAME, one, None, 50
        ),
        "rows by size, one match": lambda: store.repository_rows(
            RepositoryOrder.SIZE, one, None, 50
        ),
        "rows by size, every repository": lambda: store.repository_rows(
            RepositoryOrder.SIZE, "scale", None, 50
        ),
    }
    found: dict[str, int] = {}
    try:
        for label, search in searches.items():
            await search()  # the connection made, the statement compiled
            steps[0] = 0
            await search()
            found[label] = steps[0]
    finally:
        await store.close()
    return found


async def test_a_search_on_sqlite_costs_the_same_at_ten_times_the_repositories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text_search, "SORTED_MAX", CAP)
    small = await sqlite_steps(tmp_path, 300)
    large = await sqlite_steps(tmp_path, 3000)
    grown = {label: large[label] / small[label] for label in small}
    assert all(ratio < 1.5 for ratio in grown.values()), (grown, small, large)
