"""The web UI's pages, in process: what each shows, keyset pages, bad parameters (400, never
500), 404s, the banner's redirect for browsers, deletes and usage."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from ui_pushes import SIGNATURE, push_image, push_index, push_signature
from ui_visits import Visit, csrf_of

from portside.config.settings import Settings
from portside.metadata.base import CollectionRun
from portside.metadata.migrate import upgrade
from portside.server.app import create_app

NEXT = re.compile(r'rel="next" href="([^"]+)"')


async def test_a_browser_asking_for_the_root_goes_to_the_ui_and_curl_gets_the_banner(
    client: httpx.AsyncClient,
) -> None:
    browser = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser.status_code == 303
    assert browser.headers["location"] == "/ui/"
    curl = await client.get("/", headers={"Accept": "*/*"})
    assert curl.text == '"docker-registry server"'


async def test_without_the_ui_the_root_is_the_banner_for_everyone(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(ui={"enabled": False})
    Path(settings.storage_path).mkdir(parents=True)
    upgrade(settings.metadata_url)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        browser = await client.get("/", headers={"Accept": "text/html"})
        assert browser.text == '"docker-registry server"'
        assert (await client.get("/ui/")).status_code == 404


async def test_the_repository_list_shows_sizes_descriptions_and_last_push(
    client: httpx.AsyncClient,
) -> None:
    await push_image(
        client,
        "team/web",
        "v1",
        layer_size=5000,
        labels={"org.opencontainers.image.description": "The web front"},
    )
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert "team/web" in page.text
    assert "The web front" in page.text
    assert " kB" in page.text
    assert "UTC" in page.text


@pytest.mark.parametrize("order", ["name", "pushed", "size"])
async def test_pages_of_repositories_cover_each_once_in_every_order(
    client: httpx.AsyncClient, order: str
) -> None:
    names = [f"r/{n}" for n in range(7)]
    for size, name in enumerate(names):
        await push_image(client, name, "v1", layer_size=1000 + size * 100)
    seen: list[str] = []
    url = f"/ui/?sort={order}&n=3"
    while url:
        page = await client.get(url)
        assert page.status_code == 200
        seen += re.findall(r">(r/\d)</a>", page.text)
        found = NEXT.search(page.text)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert sorted(seen) == names
    assert len(seen) == len(names)
    if order == "size":
        assert seen == list(reversed(names))
    if order == "pushed":
        assert seen == list(reversed(names))


async def test_search_matches_names_and_descriptions_and_answers_a_fragment(
    client: httpx.AsyncClient,
) -> None:
    await push_image(
        client, "team/web", "v1", labels={"org.opencontainers.image.description": "nginx front end"}
    )
    await push_image(client, "team/db", "v1")
    by_description = await client.get("/ui/", params={"q": "NGINX"})
    assert "team/web" in by_description.text
    assert "team/db" not in by_description.text
    fragment = await client.get("/ui/", params={"q": "db", "partial": "1"})
    assert "team/db" in fragment.text
    assert "<html" not in fragment.text
    none = await client.get("/ui/", params={"q": "nothing-matches"})
    assert "No repository you can see matches" in none.text


@pytest.mark.parametrize(
    "query",
    [
        "sort=colour",
        "n=0",
        "n=201",
        "n=abc",
        "n=1&n=2",
        "q=a&q=b",
        "q=%00",
        "q=" + "x" * 201,
        "sort=size&after=abc",
        "sort=size&after=1~x",
        "sort=pushed&after=yesterday~1",
        "sort=pushed&after=2024-01-01T00:00:00~1",
    ],
)
async def test_bad_query_parameters_are_a_400_page(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"/ui/?{query}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/repositories/UPPER/case", 400),
        ("/ui/repositories/a//b", 400),
        ("/ui/repositories/no/such", 404),
        ("/ui/images/no/such@sha256:" + "a" * 64, 404),
        ("/ui/images/team/web@sha256:short", 400),
        ("/ui/images/team/web@md5:" + "a" * 32, 400),
        ("/ui/repositories/team/web?n=-1", 400),
        ("/ui/nothing/here", 404),
        ("/ui/static/nothing.js", 404),
        ("/ui/delete?repository=team/web&reference=bad%20tag", 400),
    ],
)
async def test_bad_paths_are_400_or_404_pages_never_500(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    await push_image(client, "team/web", "v1")
    assert (await client.get(path)).status_code == status


async def test_a_repository_page_shows_each_tag_with_its_pull_commands(
    client: httpx.AsyncClient,
) -> None:
    await push_image(client, "team/web", "v1", architecture="arm64")
    index, _ = await push_index(client, "team/web", "multi")
    page = await client.get("/ui/repositories/team/web")
    assert page.status_code == 200
    assert "podman pull registry.test/team/web:v1" in page.text
    assert "docker pull registry.test/team/web:multi" in page.text
    assert "linux/arm64" in page.text
    assert "linux/amd64, linux/arm64" in page.text
    assert index[:19] in page.text


async def test_tag_pages_follow_one_another(client: httpx.AsyncClient) -> None:
    digest = await push_image(client, "team/web", "t0")
    for n in range(1, 5):
        await client.put(
            f"/v2/team/web/manifests/t{n}",
            content=(await client.get(f"/v2/team/web/manifests/{digest}")).content,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
    first = await client.get("/ui/repositories/team/web?n=2")
    assert ">t0<" in first.text
    assert ">t2<" not in first.text
    second = await client.get("/ui/repositories/team/web?n=2&after=t1")
    assert ">t2<" in second.text
    assert ">t3<" in second.text
    assert ">t0<" not in second.text


async def test_an_image_page_shows_layers_config_and_referrers(client: httpx.AsyncClient) -> None:
    digest = await push_image(client, "team/web", "v1", labels={"maintainer": "ops team"})
    signature = await push_signature(client, "team/web", digest)
    page = await client.get(f"/ui/images/team/web@{digest}")
    assert page.status_code == 200
    for shown in ["Layers", "PATH=/bin", "/bin/true", "maintainer", "ops team", "COPY data /"]:
        assert shown in page.text, shown
    assert SIGNATURE in page.text
    assert f"/ui/images/team/web@{signature}" in page.text
    assert "Raw manifest" in page.text


async def test_an_index_page_links_each_platform_to_its_manifest(client: httpx.AsyncClient) -> None:
    index, children = await push_index(client, "team/web", "multi")
    page = await client.get(f"/ui/images/team/web@{index}")
    assert "Platforms" in page.text
    for child in children:
        assert f"/ui/images/team/web@{child}" in page.text
    assert "linux/arm64" in page.text


async def test_deleting_a_tag_through_the_ui_removes_it_from_the_api(
    client: httpx.AsyncClient,
) -> None:
    await push_image(client, "team/web", "v1")
    await push_image(client, "team/web", "v2")
    confirm = await client.get("/ui/delete", params={"repository": "team/web", "reference": "v1"})
    assert "Delete the tag" in confirm.text
    form = {"repository": "team/web", "reference": "v1", "csrf": csrf_of(confirm.text)}
    done = await client.post("/ui/delete", data=form)
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/repositories/team/web?deleted=v1"
    assert (await client.get("/v2/team/web/tags/list")).json()["tags"] == ["v2"]


async def test_deleting_a_manifest_takes_its_tags_and_a_last_one_its_repository_off_the_list(
    client: httpx.AsyncClient,
) -> None:
    digest = await push_image(client, "team/web", "v1")
    confirm = await client.get("/ui/delete", params={"repository": "team/web", "reference": digest})
    assert "with its tags" in confirm.text
    form = {"repository": "team/web", "reference": digest, "csrf": csrf_of(confirm.text)}
    done = await client.post("/ui/delete", data=form)
    assert done.headers["location"] == "/ui/"
    assert "team/web" not in (await client.get("/ui/")).text
    again = await client.post("/ui/delete", data=form)
    assert again.status_code == 404


async def test_deleting_is_refused_where_delete_is_disabled(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(delete_enabled=False)
    Path(settings.storage_path).mkdir(parents=True)
    upgrade(settings.metadata_url)
    app: Starlette = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        await push_image(client, "team/web", "v1")
        page = await client.get("/ui/repositories/team/web")
        assert "Delete" not in page.text
        confirm = await client.get("/ui/delete?repository=team/web&reference=v1")
        assert confirm.status_code == 403


async def test_usage_counts_shared_blobs_once_per_namespace_and_shows_the_last_gc(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    await push_image(client, "team/web", "v1", layer_size=3000)
    await push_image(client, "team/db", "v1", layer_size=4000)
    await push_image(client, "solo", "v1", layer_size=500)
    page = await client.get("/ui/usage")
    assert page.status_code == 200
    assert "team/" in page.text
    assert "(top level)" in page.text
    assert "none recorded" in page.text
    removed = '[{"what":"blobs","removed":3,"bytes":12000}]'
    await app.state.registry.metadata.record_collection(
        CollectionRun(datetime.now(UTC), 1.5, 12000, removed)
    )
    page = await client.get("/ui/usage")
    assert "freed 12.0 kB" in page.text
    assert "3 blobs" in page.text


async def test_usage_is_for_those_who_may_pull_everything(
    visit: Visit, pusher: httpx.AsyncClient
) -> None:
    await push_image(pusher, "team/web", "v1")
    assert (await (await visit("alice")).get("/ui/usage")).status_code == 403
    assert (await (await visit()).get("/ui/usage")).status_code == 403
    assert (await (await visit("admin")).get("/ui/usage")).status_code == 200


async def test_static_files_are_versioned_and_kept_for_a_year(client: httpx.AsyncClient) -> None:
    page = await client.get("/ui/")
    script = page.text.split('<script src="')[1].split('"')[0]
    assert "?v=" in script
    response = await client.get(script)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "immutable" in response.headers["cache-control"]
