"""Pieces of SQL the parts of the store share: inserts that take ON CONFLICT in either dialect,
IN lists of bounded length, times as they come back, and repositories by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Dialect, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.base import Executable

from portside.metadata.prepared import Prepared
from portside.metadata.tables import repositories

# Digests per IN (...) list, well under SQLite's 32766 bound variables.
CHUNK: Final = 500


def now() -> datetime:
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    # SQLite stores no time zone: it hands back, naive, the UTC time it was given.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def upsert(dialect: Dialect, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes ON CONFLICT clauses, in the dialect."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


_INSERTS_MISSING: dict[tuple[str, tuple[str, ...]], Prepared] = {}


def insert_missing(conn: Connection, table: Table, **values: Any) -> bool:
    """Insert a row unless one with the same key is there, even when a concurrent transaction
    (another worker, another instance) is inserting it: then wait for it, and skip. Whether
    the row was inserted (RETURNING tells; rowcount is -1 on PostgreSQL)."""
    columns = tuple(values)
    prepared = _INSERTS_MISSING.get((table.name, columns))
    if prepared is None:  # one per table and set of columns: a handful in all

        def statement(dialect: Dialect) -> Executable:
            key = next(iter(table.primary_key))
            parameters: dict[str, Any] = {column: bindparam(column) for column in columns}
            return upsert(dialect, table).values(parameters).on_conflict_do_nothing().returning(key)

        prepared = _INSERTS_MISSING[(table.name, columns)] = Prepared(statement)
    return prepared.run(conn, **values).first() is not None


def chunks(items: Iterable[str]) -> Iterator[list[str]]:
    """items, sorted (so that rows are locked in one order), in lists of at most CHUNK."""
    ordered = sorted(items)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


_REPOSITORY_ID = Prepared(select(repositories.c.id).where(repositories.c.name == bindparam("name")))


def find_repository(conn: Connection, name: str) -> int | None:
    """The id of the repository with this name, if there is one."""
    found: int | None = _REPOSITORY_ID.run(conn, name=name).scalar()
    return found


def ensure_repository(conn: Connection, name: str) -> int:
    """The id of the repository with this name, created if there is none."""
    found = find_repository(conn, name)
    if found is None:
        insert_missing(conn, repositories, name=name, created_at=now())
        found = find_repository(conn, name)
        assert found is not None
    return found
