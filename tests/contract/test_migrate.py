"""Migrations when several instances start at once on one database: one migrates, the others
wait and find the schema at head (a PostgreSQL advisory lock; SQLite's write lock)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import ProgrammingError

from portside.metadata import migrate
from portside.metadata.tables import metadata
from postgres import schema

STARTS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind; PostgreSQL's from the postgres_url fixture."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with schema(request.getfixturevalue("postgres_url")) as url:
        yield url


def test_instances_starting_at_once_migrate_once(fresh_url: str) -> None:
    """Processes, as `portside serve` instances are: Alembic is not thread-safe."""
    code = "import sys; from portside.metadata.migrate import upgrade; upgrade(sys.argv[1])"
    starts = [
        subprocess.Popen([sys.executable, "-c", code, fresh_url], stderr=subprocess.PIPE)
        for _ in range(STARTS)
    ]
    failures = [start.communicate(timeout=120)[1].decode() for start in starts]
    assert [start.returncode for start in starts] == [0] * STARTS, failures
    engine = create_engine(fresh_url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= set(metadata.tables)
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            assert len(versions) == 1
    finally:
        engine.dispose()


def test_a_failed_migration_reports_its_own_error_and_can_be_retried(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock's release after the failure must not hide the error (PostgreSQL refuses every
    statement in an aborted transaction)."""

    def broken(config: Any, revision: str) -> None:
        config.attributes["connection"].execute(text("SELECT no_such_column FROM no_such_table"))

    monkeypatch.setattr(migrate.command, "upgrade", broken)
    with pytest.raises(Exception, match="no_such_table") as raised:
        migrate.upgrade(fresh_url)
    assert fresh_url.startswith("sqlite") or isinstance(raised.value, ProgrammingError)
    monkeypatch.undo()
    migrate.upgrade(fresh_url)
    migrate.upgrade(fresh_url)  # at head: nothing to do


def test_a_migration_failing_after_others_leaves_the_database_as_it_was(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All steps are one transaction: a waiting instance never finds, and a failure never
    leaves, a schema part way (Alembic commits each step on SQLite unless told otherwise)."""
    upgrade = migrate.command.upgrade

    def fails_after_three(config: Any, revision: str) -> None:
        upgrade(config, "0003")
        config.attributes["connection"].execute(text("SELECT no_such_column FROM no_such_table"))

    monkeypatch.setattr(migrate.command, "upgrade", fails_after_three)
    with pytest.raises(Exception, match="no_such_table"):
        migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) is None
    monkeypatch.undo()
    migrate.upgrade(fresh_url)
    assert migrate.current(fresh_url) == migrate.history()[-1].revision
