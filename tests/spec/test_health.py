"""GET /debug/health, /livez and /readyz of an in-process registry: no credentials, 200 with `{}`
when all is well, 503 with the failing checks, and the drain file. tests/unit/test_health_checks.py
breaks the storage and the database; tests/e2e/test_e2e_health.py drains a running server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers import ClientFactory

from portside.auth.htpasswd import add_user

PATHS = ("/debug/health", "/livez", "/readyz")


@pytest.mark.parametrize("path", PATHS)
async def test_a_healthy_registry_answers_200_and_an_empty_map(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.json() == {}
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", PATHS)
async def test_health_needs_no_credentials_with_auth_on(
    make_client: ClientFactory, tmp_path: Path, path: str
) -> None:
    htpasswd = tmp_path / "htpasswd"
    add_user(htpasswd, "alice", "alice-Secret-1", rounds=4)
    client = await make_client(auth={"htpasswd": {"path": str(htpasswd)}})

    assert (await client.get("/v2/")).status_code == 401
    assert (await client.get(path)).status_code == 200


async def test_a_drain_file_makes_readyz_503_and_nothing_else(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    drain = tmp_path / "drain"
    client = await make_client(health={"drain_file": str(drain)})
    assert (await client.get("/readyz")).status_code == 200

    drain.touch()
    drained = await client.get("/readyz")
    assert drained.status_code == 503
    assert drained.json() == {"drain": f"draining: {drain} exists"}
    assert (await client.get("/livez")).status_code == 200
    assert (await client.get("/debug/health")).status_code == 200
    assert (await client.get("/v2/")).status_code == 200  # it still serves what comes

    drain.unlink()
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.filesystem_only("free space is checked on the disk of storage_path")
async def test_too_little_free_space_fails_the_disk_check(make_client: ClientFactory) -> None:
    client = await make_client(health={"min_free_space": "1000TiB"})

    response = await client.get("/debug/health")

    assert response.status_code == 503
    assert list(response.json()) == ["disk"]
    assert "below min_free_space 1,099,511,627,776,000" in response.json()["disk"]
    assert (await client.get("/readyz")).status_code == 200  # still worth sending requests to
