"""A whole repository deleted from the web UI, as `DELETE /v2/_portside/repositories/<name>`
does it; and a policy's refusal (an immutable tag) shown as a page that says why."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from ui_pushes import push_image
from ui_visits import csrf_of

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import create_app

IMMUTABLE = {"immutable_tags": [{"name": "releases", "repositories": ["*"], "tags": ["v*"]}]}


@pytest.fixture
async def make_client(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Any]]:
    apps = []

    async def make(**settings: Any) -> httpx.AsyncClient:
        found = make_settings(**settings)
        Path(found.storage_path).mkdir(parents=True)
        upgrade(found.metadata_url)
        app = create_app(found)
        apps.append(app)
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="http://registry.test")

    yield make
    for app in apps:
        await app.state.registry.metadata.close()


async def test_deleting_a_repository_through_the_ui_removes_it_from_the_api(
    make_client: Callable[..., Any],
) -> None:
    async with await make_client() as client:
        await push_image(client, "team/web", "latest")
        await push_image(client, "team/web", "next")
        await push_image(client, "team/db", "latest")
        page = await client.get("/ui/repositories/team/web")
        assert "Delete the repository" in page.text
        confirm = await client.get("/ui/delete", params={"repository": "team/web"})
        assert "Delete the repository <code>team/web</code>?" in confirm.text

        form = {"repository": "team/web", "reference": "", "csrf": csrf_of(confirm.text)}
        done = await client.post("/ui/delete", data=form)

        assert done.status_code == 303
        assert done.headers["location"] == "/ui/"
        assert (await client.get("/v2/team/web/tags/list")).status_code == 404
        assert (await client.get("/v2/team/db/tags/list")).json()["tags"] == ["latest"]
        assert (await client.post("/ui/delete", data=form)).status_code == 404


async def test_an_immutable_tag_refused_by_the_ui_says_which_rule(
    make_client: Callable[..., Any],
) -> None:
    async with await make_client(policies=IMMUTABLE) as client:
        await push_image(client, "team/web", "v1")
        confirm = await client.get("/ui/delete", params={"repository": "team/web"})
        csrf = csrf_of(confirm.text)

        for reference in ("", "v1"):
            form = {"repository": "team/web", "reference": reference, "csrf": csrf}
            refused = await client.post("/ui/delete", data=form)
            assert refused.status_code == 403
            assert "tag v1 of team/web is immutable (rule releases)" in refused.text
        assert (await client.get("/v2/team/web/tags/list")).json()["tags"] == ["v1"]
