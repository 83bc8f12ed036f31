"""Bring a metadata database to the newest schema with Alembic; run once before workers start.
Take it back to an older revision (`portside db downgrade`) before an older Portside is installed
again, and say which revision it is at.

Several instances may start at once against one database: on PostgreSQL each takes the same
session-level advisory lock first, so one migrates while the others wait, then find the schema
at head and have nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from portside.metadata.engine import make_engine

# pg_advisory_lock's key for migrations: "portside" as a big-endian 64-bit integer.
MIGRATION_LOCK: Final = int.from_bytes(b"portside", "big")


class UnknownRevision(ValueError):
    """A downgrade to a revision this version does not have, or not below the current one."""


@dataclass(frozen=True, slots=True)
class Revision:
    revision: str
    summary: str  # the first line of the migration's docstring


def upgrade(url: str) -> None:
    _run(url, lambda config: command.upgrade(config, "head"))


def downgrade(url: str, revision: str) -> None:
    """Take the schema back to revision, undoing each newer migration in turn; what the older
    schema has no place for (tables, columns, indexes and triggers added since) is dropped."""
    known = [r.revision for r in history()]
    if revision not in known:
        raise UnknownRevision(f"no revision {revision!r}: this version has {', '.join(known)}")
    now = current(url)
    if now is None or now not in known or known.index(revision) >= known.index(now):
        raise UnknownRevision(f"the database is at {now or 'no revision'}, not above {revision}")
    _run(url, lambda config: command.downgrade(config, revision))


def current(url: str) -> str | None:
    """The revision the database is at; None if it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def history() -> list[Revision]:
    """The revisions this version knows, oldest first."""
    scripts = ScriptDirectory.from_config(_config())
    return [
        Revision(script.revision, (script.doc or "").strip().splitlines()[0])
        for script in reversed(list(scripts.walk_revisions()))
    ]


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("portside.metadata") / "migrations"))
    return config


def _run(url: str, migrate: Callable[[Config], None]) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            locked = _lock(connection)
            try:
                # One transaction for every step: Alembic commits after each migration on
                # SQLite (no transactional DDL there, it assumes), which would let a waiting
                # instance in between, to redo what it read as not yet done.
                connection.begin()
                config = _config()
                config.attributes["connection"] = connection
                migrate(config)
                connection.commit()
            finally:
                if locked:
                    connection.rollback()  # a failed migration leaves its transaction aborted
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK}
                    )
                    connection.commit()
    finally:
        engine.dispose()


def _lock(connection: Connection) -> bool:
    """Serialize the migrations of instances starting at once; whether there is a lock to
    release. PostgreSQL: wait for the advisory lock, outside any migration's transaction.
    SQLite: begin the migration's one transaction IMMEDIATE, so it holds the database's write
    lock from before it reads the schema's version until every step is committed."""
    if connection.dialect.name == "sqlite":
        # A batch migration copies a table into a new one and drops the old: with foreign keys
        # on, the drop would cascade to the rows that refer to it (every manifest, link and tag
        # of the repositories table). On the driver's connection, outside any transaction,
        # where SQLite takes this pragma; the engine is disposed of after the migration.
        connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        connection.execution_options(portside_write=True)
        return False
    if connection.dialect.name != "postgresql":
        return False
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()
    return True
