"""Robot accounts log in to the web UI as they log in to the API (`robot$NAME` and the secret),
see what their scopes allow and nothing else, and lose the session when revoked."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from ui_pushes import push_image
from ui_visits import Visit, csrf_of

from portside.metadata.base import MetadataStore
from portside.server.robots import create_robot


def metadata(app: Starlette) -> MetadataStore:
    found: MetadataStore = app.state.registry.metadata
    return found


async def robot_visit(visit: Visit, username: str, secret: str) -> httpx.AsyncClient:
    client = await visit()
    form = await client.get("/ui/login")
    answer = await client.post(
        "/ui/login",
        data={"csrf": csrf_of(form.text), "username": username, "password": secret},
    )
    assert answer.status_code == 303, answer.text
    return client


async def test_a_robot_logs_in_and_sees_its_scopes_only(
    visit: Visit, pusher: httpx.AsyncClient, auth_app: Starlette
) -> None:
    await push_image(pusher, "team/web", "v1")
    await push_image(pusher, "ops/db", "v1")
    _, secret = await create_robot(metadata(auth_app), "ci-web", ["repository:ops/db:pull"], None)

    robot = await robot_visit(visit, "robot$ci-web", secret)
    listing = await robot.get("/ui/")

    assert "Logged in as" in listing.text
    assert "robot$ci-web" in listing.text
    assert "ops/db" in listing.text
    assert "team/web" not in listing.text
    assert (await robot.get("/ui/repositories/team/web")).status_code == 404


async def test_a_revoked_robots_session_ends_within_a_second(
    visit: Visit, pusher: httpx.AsyncClient, auth_app: Starlette
) -> None:
    await push_image(pusher, "ops/db", "v1")
    _, secret = await create_robot(metadata(auth_app), "ci", ["repository:ops/db:pull"], None)
    robot = await robot_visit(visit, "robot$ci", secret)
    assert (await robot.get("/ui/repositories/ops/db")).status_code == 200

    assert await metadata(auth_app).delete_robot("ci")
    await asyncio.sleep(1.1)

    assert "Logged in as" not in (await robot.get("/ui/")).text
    assert (await robot.get("/ui/repositories/ops/db")).status_code == 404


async def test_a_wrong_robot_secret_starts_no_session(visit: Visit, auth_app: Starlette) -> None:
    await create_robot(metadata(auth_app), "ci", ["repository:ops/db:pull"], None)
    client = await visit()
    form = await client.get("/ui/login")
    answer = await client.post(
        "/ui/login",
        data={"csrf": csrf_of(form.text), "username": "robot$ci", "password": "psrt_wrong"},
    )
    assert answer.status_code == 401
    assert "portside_session" not in answer.headers.get("set-cookie", "")
