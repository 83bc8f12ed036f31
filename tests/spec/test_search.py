"""The classic registry's /v1/search, which `docker search` and `podman search` call, and the hook
that authorization uses to show only repositories the caller may pull (search and /v2/_catalog).

Not in the OCI spec. The response is the shape of Docker Hub's v1 search, which both CLIs decode
(moby registry.SearchResults, containers/image docker.SearchResult): query, num_results,
num_pages, page, page_size and results of name, description, star_count, is_official,
is_automated. A repository's description is the `org.opencontainers.image.description` of its
newest manifest that has one: the manifest's annotation, else its image config's label.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from helpers import (
    DOCKER_MANIFEST,
    FLAVOURS,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    image_manifest,
    push_blob,
    push_image,
    push_index,
    push_manifest,
    put_manifest,
    random_bytes,
    to_json,
)
from starlette.applications import Starlette
from starlette.types import Scope

from portside.api import guard
from portside.registry import discovery

DESCRIPTION = "org.opencontainers.image.description"
RESULT_FIELDS = {"name", "description", "star_count", "is_official", "is_automated"}


async def search(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/v1/search", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


async def names(client: httpx.AsyncClient, q: str) -> list[str]:
    return [result["name"] for result in (await search(client, q=q, n=100))["results"]]


async def descriptions(client: httpx.AsyncClient) -> dict[str, str]:
    body = await search(client, n=100)
    return {result["name"]: result["description"] for result in body["results"]}


async def push_with_config(
    client: httpx.AsyncClient,
    name: str,
    config: bytes,
    media_type: str = OCI_MANIFEST,
    tag: str | None = "latest",
    **fields: Any,
) -> None:
    """An image whose config blob is config, as given; fields go into the manifest."""
    config_type, layer_type = FLAVOURS[media_type]
    await push_blob(client, name, config)
    layer = random_bytes()
    await push_blob(client, name, layer)
    document = image_manifest(
        descriptor(config_type, config), [descriptor(layer_type, layer)], media_type, **fields
    )
    await push_manifest(client, name, tag, document)


def labelled(labels: dict[str, str] | None) -> bytes:
    """An image config with these labels, and random bytes so each config is new."""
    return to_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels, "Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": random_bytes(8).hex(),
        }
    )


# the response


async def test_search_answers_in_the_shape_docker_and_podman_parse(
    client: httpx.AsyncClient,
) -> None:
    await push_image(client, "library/ubuntu", layers=0, annotations={DESCRIPTION: "Ubuntu"})
    body = await search(client, q="ubuntu")
    assert body == {
        "query": "ubuntu",
        "num_results": 1,
        "num_pages": 1,
        "page": 1,
        "page_size": 25,
        "results": [
            {
                "name": "library/ubuntu",
                "description": "Ubuntu",
                "star_count": 0,
                "is_official": False,
                "is_automated": False,
            }
        ],
    }


async def test_search_without_a_description_gives_an_empty_string(
    client: httpx.AsyncClient,
) -> None:
    """Both CLIs decode description as a string; null would be "" to Go, but not to others."""
    await push_image(client, "plain", layers=0)
    [result] = (await search(client, q="plain"))["results"]
    assert set(result) == RESULT_FIELDS
    assert result["description"] == ""


async def test_search_with_no_results(client: httpx.AsyncClient) -> None:
    body = await search(client, q="nothing")
    assert (body["num_results"], body["num_pages"], body["page"], body["results"]) == (0, 1, 1, [])


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "  "}])
async def test_search_with_an_empty_query_lists_every_repository(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    for name in ("b", "a/x", "c"):
        await push_image(client, name, layers=0)
    body = await search(client, **params)
    assert body["query"] == ""
    assert [result["name"] for result in body["results"]] == ["a/x", "b", "c"]


# paging


async def test_search_pages_with_num_pages_page_and_page_size(client: httpx.AsyncClient) -> None:
    repositories = [f"team/app{n:02}" for n in range(7)]
    for name in reversed(repositories):
        await push_image(client, name, layers=0)
    seen: list[str] = []
    for page in (1, 2, 3):
        body = await search(client, q="team/", n=3, page=page)
        assert (body["num_results"], body["num_pages"]) == (7, 3)
        assert (body["page"], body["page_size"]) == (page, 3)
        seen += [result["name"] for result in body["results"]]
    assert seen == repositories
    past_the_end = await search(client, q="team/", n=3, page=4)
    assert (past_the_end["num_results"], past_the_end["page"], past_the_end["results"]) == (
        7,
        4,
        [],
    )


async def test_search_page_size_defaults_to_25(client: httpx.AsyncClient) -> None:
    for n in range(26):
        await push_image(client, f"many/app{n:02}", tag=None, layers=0)
    body = await search(client, q="many")
    assert (body["num_results"], body["num_pages"], body["page"], body["page_size"]) == (
        26,
        2,
        1,
        25,
    )
    assert len(body["results"]) == 25
    body = await search(client, q="many", page=2)
    assert [result["name"] for result in body["results"]] == ["many/app25"]


async def test_search_page_size_is_capped_at_100(client: httpx.AsyncClient) -> None:
    """podman passes its --limit as n as it is; docker refuses more than 100 itself."""
    body = await search(client, n=1000)
    assert body["page_size"] == 100


@pytest.mark.parametrize("field", ["n", "page"])
@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "", "²", "1e3", "9999999999"])
async def test_search_with_an_invalid_number_is_400_pagination_number_invalid(
    client: httpx.AsyncClient, field: str, value: str
) -> None:
    """As the tags list answers a bad n (distribution's PAGINATION_NUMBER_INVALID)."""
    response = await client.get("/v1/search", params={"q": "x", field: value})
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


async def test_catalog_with_a_non_ascii_digit_is_400(client: httpx.AsyncClient) -> None:
    """ "²".isdigit() is true in Python, but it is no number."""
    response = await client.get("/v2/_catalog", params={"n": "²"})
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


# matching


async def test_search_matches_the_name_or_the_description_ignoring_case(
    client: httpx.AsyncClient,
) -> None:
    await push_image(client, "library/nginx", layers=0, annotations={DESCRIPTION: "Web SERVER"})
    await push_image(client, "team/apache", layers=0, annotations={DESCRIPTION: "HTTP server"})
    await push_image(client, "team/web-tools", layers=0)
    await push_image(client, "team/db", layers=0, annotations={DESCRIPTION: "Postgres 100%"})
    assert await names(client, "server") == ["library/nginx", "team/apache"]
    assert await names(client, "Server") == ["library/nginx", "team/apache"]
    assert await names(client, "web") == ["library/nginx", "team/web-tools"]
    assert await names(client, "TEAM/") == ["team/apache", "team/db", "team/web-tools"]
    assert await names(client, "100%") == ["team/db"]
    assert await names(client, "_") == []
    assert await names(client, "%") == ["team/db"]
    body = await search(client, q="Server")
    assert body["query"] == "Server"


async def test_search_does_not_list_repositories_without_manifests(
    client: httpx.AsyncClient,
) -> None:
    await push_blob(client, "blob/only", random_bytes())
    pushed = await push_image(client, "deleted/image", layers=0)
    response = await client.delete(f"/v2/deleted/image/manifests/{pushed.digest}")
    assert response.status_code == 202
    await push_image(client, "kept/image", layers=0)
    assert await names(client, "") == ["kept/image"]
    assert (await search(client, q="only"))["num_results"] == 0


# descriptions


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
async def test_description_comes_from_the_manifest_annotation(
    client: httpx.AsyncClient, media_type: str
) -> None:
    await push_image(
        client, "app", media_type=media_type, annotations={DESCRIPTION: "  From the manifest "}
    )
    assert await descriptions(client) == {"app": "From the manifest"}


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
async def test_description_comes_from_the_config_label(
    client: httpx.AsyncClient, media_type: str
) -> None:
    """What `podman build --label` and Dockerfile `LABEL` write, into config.Labels."""
    config = labelled({DESCRIPTION: "From the config", "other": "x"})
    await push_with_config(client, "app", config, media_type)
    assert await descriptions(client) == {"app": "From the config"}
    assert await names(client, "the config") == ["app"]


async def test_the_manifest_annotation_wins_over_the_config_label(
    client: httpx.AsyncClient,
) -> None:
    config = labelled({DESCRIPTION: "From the config"})
    await push_with_config(client, "app", config, annotations={DESCRIPTION: "From the manifest"})
    assert await descriptions(client) == {"app": "From the manifest"}


@pytest.mark.parametrize(
    "config",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"config": null}',
        b'{"config": {"Labels": null}}',
        b'{"config": {"Labels": {"org.opencontainers.image.description": 42}}}',
        b'{"config": {"Labels": {"org.opencontainers.image.description": " "}}}',
        b"{}",
    ],
)
async def test_a_config_without_a_usable_label_gives_no_description(
    client: httpx.AsyncClient, config: bytes
) -> None:
    """The config is the client's: the push succeeds whatever it holds."""
    await push_with_config(client, "app", config)
    assert await descriptions(client) == {"app": ""}


async def test_a_config_over_1_mib_is_not_read_for_a_description(
    client: httpx.AsyncClient,
) -> None:
    config = to_json({"config": {"Labels": {DESCRIPTION: "big"}}, "pad": "x" * (1 << 20)})
    await push_with_config(client, "app", config)
    assert await descriptions(client) == {"app": ""}


async def test_a_long_description_is_cut_to_1024_characters(client: httpx.AsyncClient) -> None:
    await push_image(client, "app", layers=0, annotations={DESCRIPTION: "é" * 5000})
    assert await descriptions(client) == {"app": "é" * 1024}


async def test_an_index_describes_with_its_own_annotation(client: httpx.AsyncClient) -> None:
    child = await push_image(client, "app", tag=None, annotations={DESCRIPTION: "the child"})
    await push_index(client, "app", [child], annotations={DESCRIPTION: "the index"})
    assert await descriptions(client) == {"app": "the index"}


async def test_an_index_without_an_annotation_leaves_its_childrens(
    client: httpx.AsyncClient,
) -> None:
    """The index is newest but has no description: the newest manifest that has one counts."""
    described = await push_image(client, "app", tag=None, annotations={DESCRIPTION: "child"})
    undescribed = await push_image(client, "app", tag=None)
    await push_index(client, "app", [described, undescribed])
    assert await descriptions(client) == {"app": "child"}


async def test_the_newest_manifest_with_a_description_wins(client: httpx.AsyncClient) -> None:
    """Newest is the last pushed; pointing a tag back at an older manifest changes nothing."""
    first = await push_image(client, "app", "v1", annotations={DESCRIPTION: "first"})
    await push_image(client, "app", "v2", annotations={DESCRIPTION: "second"})
    assert await descriptions(client) == {"app": "second"}
    await push_image(client, "app", "v3")
    assert await descriptions(client) == {"app": "second"}
    response = await put_manifest(client, "app", "latest", first.body, first.media_type)
    assert response.status_code == 201
    assert await descriptions(client) == {"app": "second"}
    assert await names(client, "first") == []


async def test_deleting_the_newest_manifest_brings_back_the_previous_description(
    client: httpx.AsyncClient,
) -> None:
    await push_image(client, "app", "v1", annotations={DESCRIPTION: "first"})
    second = await push_image(client, "app", "v2", annotations={DESCRIPTION: "second"})
    response = await client.delete(f"/v2/app/manifests/{second.digest}")
    assert response.status_code == 202
    assert await descriptions(client) == {"app": "first"}


# what the gate admits a listing with: api.guard.Admission(visible=...)


@asynccontextmanager
async def seen_by(
    app: Starlette, visible: Callable[[str], bool]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of app behind a gate that, as the gate of a registry with auth would, lets
    listings show what visible admits."""

    class Gate:
        async def admit(self, scope: Scope, need: guard.Need) -> guard.Admission:
            return guard.Admission(visible=visible)

    previous, app.state.gate = app.state.gate, Gate()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://registry.test"
        ) as client:
            yield client
    finally:
        app.state.gate = previous


def public_only(name: str) -> bool:
    return name.startswith("public/")


async def test_search_shows_only_repositories_the_caller_may_pull(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    for n in range(4):
        for team in ("public", "secret"):
            await push_image(client, f"{team}/app{n}", layers=0, annotations={DESCRIPTION: "app"})
    async with seen_by(app, public_only) as caller:
        body = await search(caller, q="app", n=3)
        assert (body["num_results"], body["num_pages"]) == (4, 2)
        assert [r["name"] for r in body["results"]] == ["public/app0", "public/app1", "public/app2"]
        body = await search(caller, q="app", n=3, page=2)
        assert [r["name"] for r in body["results"]] == ["public/app3"]
        assert (await search(caller, q="secret"))["num_results"] == 0
    assert (await search(client, q="app"))["num_results"] == 8


@pytest.mark.parametrize("batch", [1, discovery.CATALOG_BATCH])
async def test_catalog_shows_only_repositories_the_caller_may_pull(
    app: Starlette, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """With hidden repositories before, between and after, read in one batch or in several."""
    monkeypatch.setattr(discovery, "CATALOG_BATCH", batch)
    names = [f"{team}/app{n}" for n in range(3) for team in ("a-secret", "public", "z-secret")]
    for name in names:
        await push_image(client, name, layers=0)
    async with seen_by(app, public_only) as caller:
        response = await caller.get("/v2/_catalog")
        assert response.json() == {"repositories": ["public/app0", "public/app1", "public/app2"]}
        response = await caller.get("/v2/_catalog", params={"n": 2})
        assert response.json() == {"repositories": ["public/app0", "public/app1"]}
        assert response.headers["link"] == '</v2/_catalog?n=2&last=public%2Fapp1>; rel="next"'
        response = await caller.get("/v2/_catalog", params={"n": 2, "last": "public/app1"})
        assert response.json() == {"repositories": ["public/app2"]}
        assert "link" not in response.headers
    async with seen_by(app, lambda name: False) as nobody:
        response = await nobody.get("/v2/_catalog", params={"n": 2})
        assert response.json() == {"repositories": []}
        assert "link" not in response.headers
    response = await client.get("/v2/_catalog")
    assert response.json() == {"repositories": sorted(names)}


async def test_a_description_with_nul_is_stored_cleaned(db_client: httpx.AsyncClient) -> None:
    """JSON can carry a NUL ("\\u0000"), which PostgreSQL text takes not: the description drops
    it, the push succeeds. (A lone surrogate, "\\ud800", refuses the whole manifest: it is no
    text at all, test_manifests.py.)"""
    await push_image(db_client, "app", layers=0, annotations={DESCRIPTION: "a\x00b\x00c"})
    assert await descriptions(db_client) == {"app": "abc"}
    assert await names(db_client, "abc") == ["app"]


async def test_a_config_label_with_nul_or_a_lone_surrogate_is_stored_cleaned(
    db_client: httpx.AsyncClient,
) -> None:
    """A config is the client's blob, never refused: a description label with a NUL or a lone
    surrogate has the one dropped and the other replaced."""
    await push_with_config(db_client, "app", labelled({DESCRIPTION: "a\x00b\ud800c"}))
    assert await descriptions(db_client) == {"app": "ab?c"}


@pytest.mark.parametrize(
    "q", ["app\x00", "\x00", "a\x00p", "app" * 200], ids=["nul-at-end", "nul", "nul-inside", "long"]
)
async def test_search_for_what_no_name_or_description_holds_finds_nothing(
    db_client: httpx.AsyncClient, q: str
) -> None:
    """No name or description holds a NUL (PostgreSQL would refuse one in the query), nor is
    any name longer than 255 characters."""
    await push_image(db_client, "app", layers=0, annotations={DESCRIPTION: "app " * 100})
    body = await search(db_client, q=q)
    assert (body["num_results"], body["results"]) == (0, [])
