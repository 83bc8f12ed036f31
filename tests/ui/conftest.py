"""Fixtures of the web UI's in-process tests: an open registry (tests/conftest.py's client), and
one with htpasswd users and per-team permissions whose visitors log in through the UI's own
form (ui_visits.py)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from ui_visits import ACCESS, BASE_URL, PASSWORDS, Visit, basic, log_in

from portside.auth.htpasswd import add_user
from portside.config.settings import Settings
from portside.server.app import create_app


@pytest.fixture
def auth_settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    htpasswd = tmp_path / "htpasswd"
    for username, password in PASSWORDS.items():
        add_user(htpasswd, username, password, rounds=4)
    return make_settings(auth={"htpasswd": {"path": str(htpasswd)}, "access": ACCESS})


@pytest.fixture
def auth_app(auth_settings: Settings, migrated_database: Path) -> Starlette:
    storage = Path(auth_settings.storage_path)
    storage.mkdir(parents=True, exist_ok=True)
    assert auth_settings.metadata_url == f"sqlite:///{storage / 'registry.db'}"
    shutil.copyfile(migrated_database, storage / "registry.db")  # tests/conftest.py's, migrated
    return create_app(auth_settings)


@pytest.fixture
async def visit(auth_app: Starlette) -> AsyncIterator[Visit]:
    """visit(username=None, **client options): a client on the registry with auth, logged in to
    the UI as username (its own cookie jar), or anonymous."""
    clients: list[httpx.AsyncClient] = []

    async def open_client(username: str | None = None, **options: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=auth_app)
        client = httpx.AsyncClient(transport=transport, base_url=BASE_URL, **options)
        clients.append(client)
        if username is not None:
            answer = await log_in(client, username)
            assert answer.status_code == 303, answer.text
        return client

    yield open_client
    for client in clients:
        await client.aclose()


@pytest.fixture
async def pusher(auth_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API as admin, who may push anywhere."""
    transport = httpx.ASGITransport(app=auth_app)
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, headers=basic("admin")
    ) as client:
        yield client
