"""Prepared statements: compiled once per dialect, run on the driver's connection, with the
types and errors SQLAlchemy would have given."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from portside.metadata.engine import Database
from portside.metadata.prepared import Prepared

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("name", String, primary_key=True),
    Column("state", String),
    Column("size", Integer),
    Column("at", DateTime(timezone=True)),
)


class State(enum.StrEnum):
    READY = "ready"


BY_NAME = Prepared(
    select(things.c.size, things.c.at).where(
        things.c.name == bindparam("name"), things.c.state == State.READY
    )
)


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'prepared.db'}")
    metadata.create_all(database.engine)
    with database.engine.begin() as conn:
        at = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
        conn.execute(things.insert().values(name="a", state="ready", size=7, at=at))
        conn.execute(things.insert().values(name="b", state="gone", size=8, at=at))
    return database


async def test_a_row_comes_back_with_its_python_types(database: Database) -> None:
    row = await database._first(BY_NAME, name="a")
    assert row is not None
    size, at = row
    assert size == 7
    # SQLite keeps times as text: the column's own conversion turns it back into a datetime.
    assert at.replace(tzinfo=UTC) == datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


async def test_constants_in_the_statement_are_passed_as_their_values(database: Database) -> None:
    assert await database._first(BY_NAME, name="b") is None  # state 'gone' is not READY
    assert await database._first(BY_NAME, name="missing") is None


async def test_driver_errors_are_wrapped_as_sqlalchemy_wraps_them(database: Database) -> None:
    broken = Prepared(select(things.c.size).where(things.c.name == bindparam("name")))
    metadata_without = MetaData()
    Table("things", metadata_without).drop(database.engine)
    with pytest.raises(DBAPIError):
        await database._first(broken, name="a")


def test_each_dialect_gets_its_own_sql() -> None:
    positional = BY_NAME.compiled(sqlite.dialect())
    named = BY_NAME.compiled(postgresql.psycopg.dialect())
    assert positional.parameters({"name": "a"}) == ("a", "ready")
    assert named.parameters({"name": "a"}) == {"name": "a", "state_1": "ready"}
    assert "?" in positional.sql
    assert "%(name)s" in named.sql


async def test_statements_run_in_a_transaction_convert_what_they_are_given(
    database: Database,
) -> None:
    add = Prepared(
        things.insert().values(
            name=bindparam("name"), state=bindparam("state"), size=7, at=bindparam("at")
        )
    )
    later = Prepared(select(things.c.name).where(things.c.at > bindparam("at", type_=DateTime)))
    at = datetime(2027, 1, 1, tzinfo=UTC)
    with database.engine.begin() as conn:
        # SQLite keeps times as text: the DateTime's own conversion writes and compares it.
        assert add.run(conn, name="c", state="ready", at=at).rowcount == 1
        assert later.run(conn, at=datetime(2026, 12, 31, tzinfo=UTC)).rows == [("c",)]
    assert await database._first(BY_NAME, name="c") == (7, at.replace(tzinfo=None))


async def test_a_statement_run_in_a_transaction_is_rolled_back_with_it(
    database: Database,
) -> None:
    remove = Prepared(things.delete().where(things.c.name == bindparam("name")))
    with database.engine.connect() as conn:
        transaction = conn.begin()
        assert remove.run(conn, name="a").rowcount == 1
        transaction.rollback()
    assert await database._first(BY_NAME, name="a") is not None
