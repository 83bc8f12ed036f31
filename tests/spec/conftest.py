"""Spec-suite fixtures: the shared ones made cheap enough for some hundreds of registries, a client
on a registry with settings other than the defaults, and the two backends every test runs on.

The suite checks the protocol, not durability (tests/contract does that), so each registry lives
in memory-backed /dev/shm when there is one: fsync is free there. The metadata schema is migrated
once per session and copied into each registry (a SQLite file; on PostgreSQL, tests/postgres.py's
schema(migrated=True) replays what the migrations wrote).

Backends: every test that makes a registry (make_settings, and so make_client, client, app,
db_client, make_registry, registry, ...) runs on `filesystem` (blobs in a folder, metadata in
SQLite) and on `s3` (blobs under a key prefix of their own in the S3 bucket of tests/s3.py,
metadata in a PostgreSQL schema of their own from tests/postgres.py, dropped afterwards; the
prefix is emptied with all the session's at its end, by tests/s3.py, rather than by each test).
PORTSIDE_SPEC_S3 chooses the S3 half: `subset` (the default: every test function once, with the
first of its parameter sets; the rest are deselected), `all` (every parameter set), or `off`.
A test that looks at files under registry_root, or picks its database itself, says so with
`@pytest.mark.filesystem_only("why")` and runs on the filesystem backend alone.
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.session
import httpx
import pytest
from helpers import ClientFactory
from starlette.applications import Starlette

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import create_app
from postgres import MIGRATED, VARIABLE, schema
from s3 import S3Server

SHM = Path("/dev/shm")
S3_VARIABLE = "PORTSIDE_SPEC_S3"
S3_CHOICES = ("subset", "all", "off")
# Fixtures that choose the database themselves: their tests already run on SQLite and PostgreSQL.
OWN_DATABASE_FIXTURES = ("db_client", "gc_registry", "database_url")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "filesystem_only(reason): a spec test that runs on the filesystem backend alone",
    )


def s3_half() -> str:
    choice = os.environ.get(S3_VARIABLE, "subset").strip().lower() or "subset"
    if choice not in S3_CHOICES:
        raise pytest.UsageError(f"{S3_VARIABLE}={choice!r}: give one of {', '.join(S3_CHOICES)}")
    return choice


def runs_on_s3(metafunc: pytest.Metafunc) -> bool:
    definition = metafunc.definition
    if definition.get_closest_marker("filesystem_only") is not None:
        return False
    if "registry_root" in inspect.signature(metafunc.function).parameters:
        return False  # it reads files under the registry's folder
    if any(name in metafunc.fixturenames for name in OWN_DATABASE_FIXTURES):
        return False
    return s3_half() != "off"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that makes a registry by backend (see the module's docstring)."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("filesystem_only")
    if marker is not None and not (marker.args and marker.args[0]):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: filesystem_only needs a reason")
    backends = ["filesystem", "s3"] if runs_on_s3(metafunc) else ["filesystem"]
    metafunc.parametrize("backend", backends, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The S3 half's subset: of a test function's parameter sets (the tables of bad names,
    malformed headers, ...) only the first runs on S3, the others on the filesystem alone."""
    if s3_half() != "subset":
        return
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("backend") != "s3":
            kept.append(item)
            continue
        function = (str(item.path), getattr(item, "originalname", item.name))
        (dropped if function in seen else kept).append(item)
        seen.add(function)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@dataclass(frozen=True)
class S3Backend:
    """The services an S3 registry of the tests lives on."""

    server: S3Server
    postgres_url: str


@pytest.fixture(scope="session")
def boto_models_read_once() -> Iterator[None]:
    """Every S3 store makes a boto3 Session of its own, which reads and parses botocore's JSON
    models of S3 again (0.2 to 0.8 s): one loader for the session, so they are read once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            botocore.session, "create_loader", functools.cache(botocore.loaders.create_loader)
        )
        yield


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> S3Backend | None:
    """None for the filesystem backend; for S3, the bucket and the PostgreSQL server, started for
    the session when the environment names none (skipped, with the reason, when they cannot be)."""
    if request.param == "filesystem":
        return None
    request.getfixturevalue("boto_models_read_once")
    return S3Backend(request.getfixturevalue("s3_server"), request.getfixturevalue("postgres_url"))


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


def _s3_values(backend: S3Backend, stack: ExitStack, overrides: dict[str, Any]) -> dict[str, Any]:
    """Settings of a registry under a key prefix and in a PostgreSQL schema of its own, the
    schema dropped at the end of the test (the prefix is under the session's, emptied at its
    end)."""
    server = backend.server
    prefix = server.new_prefix()
    values: dict[str, Any] = {
        "storage": "s3",
        "storage_path": prefix,
        "s3_bucket": server.bucket,
        "s3_endpoint_url": server.endpoint_url,
        "s3_region": server.region,
        "s3_access_key": server.access_key,
        "s3_secret_key": server.secret_key,
    }
    if "database_url" not in overrides:
        values["database_url"] = stack.enter_context(schema(backend.postgres_url, migrated=True))
    return values


@pytest.fixture
def make_settings(
    backend: S3Backend | None, registry_root: Path, migrated_database: Path
) -> Iterator[Callable[..., Settings]]:
    """Settings for a registry of its own on the test's backend, its database already migrated."""
    count = 0
    with ExitStack() as stack:

        def make(**overrides: Any) -> Settings:
            nonlocal count
            count += 1
            storage = registry_root / f"registry-{count}"
            values: dict[str, Any] = {"storage_path": storage, "workers": 1}
            if backend is not None:
                values |= _s3_values(backend, stack, overrides)
                token = (overrides.get("auth") or {}).get("token")
                if isinstance(token, dict) and not token.get("key_path"):
                    # With storage: s3 the key cannot default to a file under storage_path.
                    key_path = registry_root / f"token-key-{count}.pem"
                    overrides = {
                        **overrides,
                        "auth": {**overrides["auth"], "token": {**token, "key_path": key_path}},
                    }
            settings = Settings(**(values | overrides))
            if settings.storage == "local":  # with s3, storage_path is a key prefix in the bucket
                Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
            if settings.database_url is None:
                shutil.copyfile(migrated_database, Path(settings.storage_path) / "registry.db")
            elif settings.database_url not in MIGRATED:  # else a schema(migrated=True) already
                upgrade(settings.metadata_url)
            return settings

        yield make


async def close_app(app: Starlette) -> None:
    """Close what create_app opened (ASGITransport runs no lifespan): its database connections."""
    await app.state.registry.metadata.close()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    app = create_app(settings)
    yield app
    await close_app(app)


@pytest.fixture
async def make_client(make_settings: Callable[..., Settings]) -> AsyncIterator[ClientFactory]:
    """make_client(**overrides): an in-process client on a fresh registry with those settings."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> httpx.AsyncClient:
            app = create_app(make_settings(**overrides))
            stack.push_async_callback(close_app, app)
            transport = httpx.ASGITransport(app=app)
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
            url = stack.enter_context(schema(server, migrated=True))
            settings = make_settings(database_url=url)
        app = create_app(settings)
        stack.push_async_callback(close_app, app)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://registry.test")
        yield await stack.enter_async_context(client)
