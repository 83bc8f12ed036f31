"""Fixtures of the upstream suite: real registries (registries.py), a Portside with its token
service as a Bearer upstream, and Upstream clients closed after each test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.server import PORTSIDE, PortsideServer
from portside.auth.htpasswd import add_user
from portside.upstream import Upstream

from .registries import distribution, distribution_htpasswd  # noqa: F401

TOKEN_SERVICE = "portside-upstream"
TOKEN_LIFETIME = 300
PULLER = ("puller", "Puller-Secret-1")
PUSHER = ("pusher", "Pusher-Secret-2")

UpstreamFactory = Callable[..., Upstream]


@pytest.fixture
async def make_upstream() -> AsyncIterator[UpstreamFactory]:
    """`make_upstream(url, **options)`: an Upstream, closed at teardown."""
    made: list[Upstream] = []

    def make(url: str, **options: Any) -> Upstream:
        upstream = Upstream(url, **options)
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        await upstream.aclose()


@pytest.fixture(scope="session")
def portside_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortsideServer]:
    """`portside serve` with htpasswd users and the built-in token service: PULLER may pull
    everything, PUSHER may push; nobody pulls anonymously."""
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable next to {sys.executable}")
    root = tmp_path_factory.mktemp("portside-token")
    htpasswd = root / "htpasswd"
    for user, secret in (PULLER, PUSHER):
        add_user(htpasswd, user, secret, rounds=4)
    auth = {
        "htpasswd": {"path": str(htpasswd)},
        "token": {"service": TOKEN_SERVICE, "lifetime": TOKEN_LIFETIME},
        "access": {
            "rules": [
                {"repositories": ["*"], "users": [PULLER[0]], "actions": ["pull"]},
                {"repositories": ["*"], "users": [PUSHER[0]], "actions": ["*"]},
            ]
        },
    }
    server = PortsideServer(Path(root), workers=1, settings={"auth": auth})
    server.start()
    yield server
    server.stop()


def pusher_client(server: PortsideServer, repository: str) -> httpx.Client:
    """A client of the token-auth Portside holding PUSHER's token for repository."""
    answer = httpx.get(
        f"{server.url}/auth/token",
        params={"service": TOKEN_SERVICE, "scope": f"repository:{repository}:pull,push"},
        auth=PUSHER,
    )
    answer.raise_for_status()
    token = answer.json()["token"]
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
