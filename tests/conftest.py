"""Shared fixtures: settings for a temporary registry, the app, and an in-process HTTP client."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import create_app

# Session fixtures of the real services, shared by every suite, so that a run starts each at most
# once: postgres_url (tests/postgres.py) and s3_server (tests/s3.py).
from postgres import postgres_url  # noqa: F401
from s3 import s3_server  # noqa: F401

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings for a registry under tmp_path; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"storage_path": tmp_path / "registry", "workers": 1}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite metadata database at the newest revision, migrated once per session: a registry's
    own starts as a copy of it, which costs a fraction of a migration."""
    path = tmp_path_factory.mktemp("template") / "registry.db"
    upgrade(f"sqlite:///{path}")
    return path


def migrate(settings: Settings, migrated_database: Path) -> None:
    """Bring the registry's metadata database to the newest revision: its default SQLite file is
    a copy of migrated_database, any other database is migrated."""
    default = Path(settings.storage_path) / "registry.db"
    if settings.metadata_url == f"sqlite:///{default}" and not default.exists():
        default.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_database, default)
    else:
        upgrade(settings.metadata_url)


@pytest.fixture
def app(settings: Settings, migrated_database: Path) -> Starlette:
    Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
    migrate(settings, migrated_database)
    return create_app(settings)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client
