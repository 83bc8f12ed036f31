"""The API version check (end-1) and the classic registry's unauthenticated endpoints."""

from __future__ import annotations

import httpx
from helpers import ClientFactory, push_image


async def test_version_check_is_200_with_api_version_header(client: httpx.AsyncClient) -> None:
    """end-1: "If the response is 200 OK, then the registry implements this specification";
    distribution and the legacy Docker API send Docker-Distribution-API-Version on it."""
    response = await client.get("/v2/")
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.json() == {}


async def test_version_check_answers_head(client: httpx.AsyncClient) -> None:
    response = await client.head("/v2/")
    assert response.status_code == 200
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert response.content == b""


async def test_every_v2_response_has_the_api_version_header(client: httpx.AsyncClient) -> None:
    """distribution sends the header on every /v2 response, errors included."""
    response = await client.get("/v2/nothing/here/tags/list")
    assert response.status_code == 404
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_banner_is_the_classic_issue_string(client: httpx.AsyncClient) -> None:
    """`curl /` answers "docker-registry server", quotes included, as the classic registry did."""
    response = await client.get("/")
    assert response.status_code == 200
    assert response.text == '"docker-registry server"'
    assert response.json() == "docker-registry server"


async def test_banner_follows_the_issue_setting(make_client: ClientFactory) -> None:
    client = await make_client(issue='"my registry"')
    response = await client.get("/")
    assert response.json() == "my registry"


async def test_v1_ping_is_true_and_standalone(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/_ping")
    assert response.status_code == 200
    assert response.json() is True
    assert response.headers["x-docker-registry-standalone"] == "True"


async def test_v1_search_finds_repositories_by_substring(client: httpx.AsyncClient) -> None:
    """The classic registry's search, so `docker search` keeps working: names containing q."""
    for name in ("library/ubuntu", "team/ubuntu-tools", "library/debian"):
        await push_image(client, name, "v1", layers=0)
    response = await client.get("/v1/search", params={"q": "ubuntu"})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "ubuntu"
    assert body["num_results"] == 2
    assert [r["name"] for r in body["results"]] == ["library/ubuntu", "team/ubuntu-tools"]
    response = await client.get("/v1/search", params={"q": "", "n": 2, "page": 2})
    body = response.json()
    assert (body["num_results"], body["num_pages"], body["page"]) == (3, 2, 2)
    assert [r["name"] for r in body["results"]] == ["team/ubuntu-tools"]
