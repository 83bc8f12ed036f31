"""A real PostgreSQL for the tests that need one, and schemas of their own in it.

The `postgres_url` fixture takes the server that PORTSIDE_TEST_POSTGRES_URL names (what
`scripts/postgres-test-cluster start DIR` prints, and scripts/test exports), else starts a
throwaway cluster with that script for the session and stops it at the end, else skips the tests
with the reason.

`schema(server_url, migrated=True)` gives a schema already at the newest revision, as `upgrade`
would leave it, in a fraction of the time: the statements a real `upgrade` runs on an empty
schema are recorded once per test process and server, then replayed into each new schema in one
transaction (checked once against the real one, catalog entry by catalog entry).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.pool import NullPool

from portside.metadata.migrate import upgrade

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres-test-cluster"
VARIABLE = "PORTSIDE_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if url := os.environ.get(VARIABLE):
        yield url
        return
    # Not under tmp_path: as root the script runs the server as the postgres user, which must be
    # able to enter the folder, and pytest's folders are private to root.
    folder = Path(tempfile.mkdtemp(prefix="portside-pg-", dir="/tmp"))
    started = subprocess.run(
        [SCRIPT, "start", folder], capture_output=True, text=True, timeout=300, check=False
    )
    try:
        if started.returncode != 0 or "=" not in started.stdout:
            reason = " ".join(started.stderr.strip().splitlines()[-3:])
            pytest.skip(f"{VARIABLE} is not set and {SCRIPT.name} failed: {reason}")
        yield started.stdout.strip().splitlines()[-1].partition("=")[2]
    finally:
        subprocess.run([SCRIPT, "stop", folder], capture_output=True, timeout=120, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def schema(server_url: str, *, migrated: bool = False) -> Iterator[str]:
    """A URL whose connections work in a new schema, dropped at the end: a database of one's own
    without the right to create databases. Empty, or with migrated, at the newest revision."""
    name = f"portside_test_{uuid.uuid4().hex[:12]}"
    url = make_url(server_url).update_query_dict({"options": f"-csearch_path={name}"})
    rendered = url.render_as_string(hide_password=False)
    script = _migration(server_url) if migrated else None
    admin = create_engine(server_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
            if script is not None:
                conn.execute(text(f"SET LOCAL search_path TO {name}"))
                _run_script(conn, script)
                MIGRATED.add(rendered)
        yield rendered
    finally:
        MIGRATED.discard(rendered)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


# The URLs of the schemas schema(migrated=True) made that are not dropped yet.
MIGRATED: set[str] = set()

# What `upgrade` writes into an empty schema, by server URL (see the module's docstring).
_MIGRATIONS: dict[str, str] = {}


def _migration(server_url: str) -> str:
    """The statements a real upgrade of an empty schema runs, but its reads, as one script."""
    if server_url not in _MIGRATIONS:
        # A first real upgrade makes what is database-wide (pg_trgm, in public); the second one,
        # recorded, finds it there, as every later schema would.
        with schema(server_url) as url:
            upgrade(url)
        recorded: list[tuple[str, Any]] = []

        def record(*args: Any) -> None:
            recorded.append((args[2], args[3]))  # the statement and its parameters

        with schema(server_url) as url:
            event.listen(Engine, "before_cursor_execute", record)
            try:
                upgrade(url)
            finally:
                event.remove(Engine, "before_cursor_execute", record)
            # Left out: reads (alembic's look at the catalog, a migration's at its empty tables)
            # and the advisory lock that serializes instances starting at once.
            writes = [
                sql for sql, parameters in recorded if not sql.lstrip().upper().startswith("SELECT")
            ]
            options = make_url(url).query["options"]
            assert isinstance(options, str)
            name = options.partition("=")[2]
            for sql in writes:  # the script runs as it is: no parameters, no schema named
                assert "%" not in sql, sql
                assert name not in sql, sql
            assert not any(parameters for sql, parameters in recorded if sql in writes)
            script = ";\n".join(writes)
            with schema(server_url) as copy:
                engine = create_engine(copy, poolclass=NullPool)
                with engine.begin() as conn:
                    _run_script(conn, script)
                engine.dispose()
                assert _catalog(copy) == _catalog(url), "the replayed schema differs from upgrade's"
        _MIGRATIONS[server_url] = script
    return _MIGRATIONS[server_url]


def _run_script(conn: Connection, script: str) -> None:
    # Without parameters, psycopg sends the statements in one round trip (the simple protocol).
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(script)
    finally:
        cursor.close()


# What a schema holds, with its own name taken out: columns, constraints, indexes, sequences,
# triggers, functions and every row of alembic_version.
_CATALOG = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' '
       || is_nullable || ' ' || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema = current_schema()
UNION ALL SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' '
       || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = current_schema()
UNION ALL SELECT 'sequence ' || sequence_name || ' ' || start_value
  FROM information_schema.sequences WHERE sequence_schema = current_schema()
UNION ALL SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
  WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal
UNION ALL SELECT 'function ' || pg_get_functiondef(oid)
  FROM pg_proc WHERE pronamespace = current_schema()::regnamespace
UNION ALL SELECT 'version ' || version_num FROM alembic_version
"""


def _catalog(url: str) -> list[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            name = conn.execute(text("SELECT current_schema()")).scalar_one()
            rows = conn.execute(text(_CATALOG)).scalars()
            return sorted(row.replace(name, "~") for row in rows if row is not None)
    finally:
        engine.dispose()
