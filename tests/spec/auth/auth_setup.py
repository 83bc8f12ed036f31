"""Building blocks for the auth tests: htpasswd files made with the library, an `auth` settings
section, credentials headers, and a registry client that keeps its settings at hand.

A library, like helpers.py, so no test_ prefix.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from starlette.applications import Starlette

from portside.auth.htpasswd import Scheme, add_user
from portside.config.settings import Settings
from portside.server.app import create_app

PASSWORDS: Final = {
    "alice": "alice-Secret-1",  # developers: pull, push team/*; her own alice/*
    "bob": "bob-Secret-2",  # developers
    "carol": "carol-Secret-3",  # readers: pull team/*
    "dave": "dave-Secret-4",  # in no group: only what anyone may do
    "admin": "admin-Secret-5",  # everything
}

ACCESS: Final = {
    "anonymous_pull": ["public/*"],
    "user_namespaces": True,
    "groups": {"developers": ["alice", "bob"], "readers": ["carol"]},
    "rules": [
        {"repositories": ["team/*"], "groups": ["developers"], "actions": ["pull", "push"]},
        {"repositories": ["team/*"], "groups": ["readers"], "actions": ["pull"]},
        {"repositories": ["*"], "users": ["admin"], "actions": ["*"]},
    ],
}

# Fast settings of each slow scheme: the tests check formats, not costs.
FAST_ROUNDS: Final = {Scheme.BCRYPT: 4, Scheme.SHA256: 5000, Scheme.SHA512: 5000}


def write_htpasswd(
    path: Path, users: Mapping[str, str] = PASSWORDS, scheme: Scheme = Scheme.BCRYPT
) -> Path:
    for username, password in users.items():
        add_user(path, username, password, scheme=scheme, rounds=FAST_ROUNDS.get(scheme))
    return path


def auth_section(htpasswd: Path, **extra: Any) -> dict[str, Any]:
    """An `auth` section: Basic auth from `htpasswd` with ACCESS, plus `extra` keys."""
    return {"htpasswd": {"path": str(htpasswd)}, "access": ACCESS, **extra}


def basic(username: str, password: str | None = None) -> dict[str, str]:
    """The Authorization header of Basic credentials (the user's own password by default)."""
    secret = PASSWORDS[username] if password is None else password
    encoded = base64.b64encode(f"{username}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Registry:
    """An in-process registry with auth: its app, settings, and clients on it."""

    app: Starlette
    settings: Settings
    stack: AsyncExitStack
    client: httpx.AsyncClient  # sends no credentials

    async def client_with(self, headers: Mapping[str, str]) -> httpx.AsyncClient:
        """A client sending these headers (credentials) with every request."""
        return await _client(self.stack, self.app, headers)

    async def as_user(self, username: str) -> httpx.AsyncClient:
        return await self.client_with(basic(username))


async def _client(
    stack: AsyncExitStack, app: Starlette, headers: Mapping[str, str]
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(
        transport=transport, base_url="http://registry.test", headers=dict(headers)
    )
    return await stack.enter_async_context(client)


async def open_registry(stack: AsyncExitStack, settings: Settings) -> Registry:
    app = create_app(settings)
    return Registry(app, settings, stack, await _client(stack, app, {}))


# make_registry(auth_section, **settings) in conftest.py
RegistryFactory = Callable[..., Awaitable[Registry]]
