"""Robot accounts: `robot$NAME` and its secret as Basic credentials or at the token service; its
scopes decide, not the access rules; a revoked or expired robot stops working within a second,
its tokens included; its last use is recorded."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from pathlib import Path

import httpx
from auth_setup import Registry, RegistryFactory, auth_section, bearer
from helpers import assert_error, push_image

from portside.metadata.base import MetadataStore
from portside.server.robots import create_robot

SERVICE = "registry.test"


def metadata(registry: Registry) -> MetadataStore:
    found: MetadataStore = registry.app.state.registry.metadata
    return found


def robot_login(name: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"robot${name}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


async def make_robot(
    registry: Registry, name: str, *scopes: str, lifetime: timedelta | None = None
) -> httpx.AsyncClient:
    _, secret = await create_robot(metadata(registry), name, scopes, lifetime)
    return await registry.client_with(robot_login(name, secret))


async def test_a_robot_pushes_within_its_scope_only(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(auth_section(htpasswd))
    robot = await make_robot(registry, "ci-app", "repository:team/app:pull,push")

    await push_image(robot, "team/app", "v1")
    outside = await robot.get("/v2/team/other/tags/list")

    assert_error(outside, 403, "DENIED")
    tokens = await metadata(registry).list_robots()
    assert tokens[0].last_used_at is not None


async def test_patterns_in_scopes_and_anonymous_pull(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(auth_section(htpasswd))
    robot = await make_robot(registry, "reader", "repository:team/*:pull")
    admin = await registry.as_user("admin")
    await push_image(admin, "team/a/b", "v1")
    await push_image(admin, "public/x", "v1")

    assert (await robot.get("/v2/team/a/b/tags/list")).status_code == 200
    assert (await robot.get("/v2/public/x/tags/list")).status_code == 200  # anyone may
    pushing = await robot.post("/v2/team/a/b/blobs/uploads/")
    assert_error(pushing, 403, "DENIED")


async def test_a_wrong_secret_or_name_is_refused(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(auth_section(htpasswd))
    _, secret = await create_robot(metadata(registry), "ci", ["repository:x:pull"], None)
    for headers in (robot_login("ci", secret + "x"), robot_login("other", secret)):
        client = await registry.client_with(headers)
        assert_error(await client.get("/v2/x/tags/list"), 401, "UNAUTHORIZED")


async def test_a_revoked_robot_stops_working_within_a_second(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(auth_section(htpasswd))
    robot = await make_robot(registry, "ci", "repository:team/app:pull,push")
    await push_image(robot, "team/app", "v1")

    assert await metadata(registry).delete_robot("ci")
    await asyncio.sleep(1.1)

    assert_error(await robot.get("/v2/team/app/tags/list"), 401, "UNAUTHORIZED")


async def test_an_expired_robot_is_refused(make_registry: RegistryFactory, htpasswd: Path) -> None:
    registry = await make_registry(auth_section(htpasswd))
    robot = await make_robot(registry, "ci", "repository:x:pull", lifetime=timedelta(0))

    assert_error(await robot.get("/v2/x/tags/list"), 401, "UNAUTHORIZED")


async def test_the_token_service_grants_a_robot_its_scopes_until_revoked(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(auth_section(htpasswd, token={"service": SERVICE}))
    _, secret = await create_robot(
        metadata(registry), "ci", ["repository:team/app:pull,push"], None
    )
    scopes = ["repository:team/app:pull,push", "repository:team/other:pull"]
    response = await registry.client.get(
        "/auth/token",
        params={"service": SERVICE, "scope": scopes, "offline_token": "true"},
        headers=robot_login("ci", secret),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body  # the secret is its long-lived credential
    client = await registry.client_with(bearer(body["token"]))
    await push_image(client, "team/app", "v1")
    assert_error(await client.get("/v2/team/other/tags/list"), 401, "UNAUTHORIZED")

    await metadata(registry).delete_robot("ci")
    await asyncio.sleep(1.1)

    refused = await client.get("/v2/team/app/tags/list")
    assert_error(refused, 401, "UNAUTHORIZED")
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
