"""Spec-suite fixtures: the shared ones made cheap enough for some hundreds of registries, and a
client on a registry with settings other than the defaults.

The suite checks the protocol, not durability (tests/contract does that), so each registry lives
in memory-backed /dev/shm when there is one: fsync is free there. The metadata schema is migrated
once per session and copied into each registry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ClientFactory
from starlette.applications import Starlette

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import create_app
from postgres import VARIABLE, schema

SHM = Path("/dev/shm")


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "registry.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def registry_root(tmp_path: Path) -> Iterator[Path]:
    if not (SHM.is_dir() and shutil.disk_usage(SHM).free > 1 << 30):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="portside-spec-", dir=SHM))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_settings(registry_root: Path, migrated_database: Path) -> Callable[..., Settings]:
    """Settings for a registry of its own, its database already migrated."""
    count = 0

    def make(**overrides: Any) -> Settings:
        nonlocal count
        count += 1
        storage = registry_root / f"registry-{count}"
        values: dict[str, Any] = {"storage_path": storage, "workers": 1, **overrides}
        settings = Settings(**values)
        if settings.storage == "local":  # with s3, storage_path is a key prefix in the bucket
            Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
        if settings.database_url is None:
            shutil.copyfile(migrated_database, Path(settings.storage_path) / "registry.db")
        else:
            upgrade(settings.metadata_url)
        return settings

    return make


@pytest.fixture
def app(settings: Settings) -> Starlette:
    return create_app(settings)


@pytest.fixture
async def make_client(make_settings: Callable[..., Settings]) -> AsyncIterator[ClientFactory]:
    """make_client(**overrides): an in-process client on a fresh registry with those settings."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=create_app(make_settings(**overrides)))
            client = httpx.AsyncClient(transport=transport, base_url="http://registry.test")
            return await stack.enter_async_context(client)

        yield make


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_client(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a fresh registry whose metadata is on SQLite, then on the PostgreSQL that
    PORTSIDE_TEST_POSTGRES_URL names, in a schema of its own (skipped when it names none): for
    what the two databases could answer differently (what each takes as text, how long)."""
    if request.param == "sqlite":
        settings = make_settings()
        server = None
    else:
        server = os.environ.get(VARIABLE)
        if not server:
            pytest.skip(f"{VARIABLE} is not set; scripts/postgres-test-cluster")
    async with AsyncExitStack() as stack:
        if server is not None:
            settings = make_settings(database_url=stack.enter_context(schema(server)))
        app = create_app(settings)
        stack.push_async_callback(app.state.registry.metadata.close)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://registry.test")
        yield await stack.enter_async_context(client)
