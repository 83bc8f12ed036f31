"""A real PostgreSQL for the tests that need one, and schemas of their own in it.

The `postgres_url` fixture takes the server that PORTSIDE_TEST_POSTGRES_URL names (what
`scripts/postgres-test-cluster start DIR` prints, and scripts/test exports), else starts a
throwaway cluster with that script for the session and stops it at the end, else skips the tests
with the reason.
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

import pytest
from sqlalchemy import create_engine, make_url, text

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
def schema(server_url: str) -> Iterator[str]:
    """A URL whose connections work in a new, empty schema, dropped at the end: a database of
    one's own without the right to create databases."""
    name = f"portside_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
        url = make_url(server_url).update_query_dict({"options": f"-csearch_path={name}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()
