"""Shared fixtures: settings for a temporary registry, the app, and an in-process HTTP client."""

from __future__ import annotations

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


@pytest.fixture
def app(settings: Settings) -> Starlette:
    Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
    upgrade(settings.metadata_url)
    return create_app(settings)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client
