"""Bring a metadata database to the newest schema with Alembic; run once before workers start.

Several instances may start at once against one database: on PostgreSQL each takes the same
session-level advisory lock first, so one migrates while the others wait, then find the schema
at head and have nothing to do.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from portside.metadata.engine import make_engine

# pg_advisory_lock's key for migrations: "portside" as a big-endian 64-bit integer.
MIGRATION_LOCK: Final = int.from_bytes(b"portside", "big")


def upgrade(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            locked = _lock(connection)
            try:
                config = Config()
                config.set_main_option(
                    "script_location", str(files("portside.metadata") / "migrations")
                )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
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
    SQLite: begin the migration's transaction IMMEDIATE, so it holds the database's write lock
    before it reads the schema's version."""
    if connection.dialect.name == "sqlite":
        connection.execution_options(portside_write=True)
        return False
    if connection.dialect.name != "postgresql":
        return False
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()
    return True
