"""The route table against ambiguous and hostile paths, in the spirit of distribution's
registry/api/v2/routes_test.go: names holding `manifests`, `blobs`, `uploads`, `tags` or
`referrers` segments route to the right endpoint, and bad names get NAME_INVALID or a 404, never
a 500 (the in-process transport re-raises any exception, so a crash fails the test)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from helpers import (
    OCI_MANIFEST,
    assert_error,
    digest_of,
    error_codes,
    push_blob,
    push_image,
    random_bytes,
    unknown_digest,
)
from starlette.applications import Starlette

# Ambiguous paths: pushed under (name, tag), then read back through a path that could be misread.


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("foo/bar", "/v2/foo/bar/manifests/tags"),
        ("foo/bar/manifests", "/v2/foo/bar/manifests/manifests/tags"),
        ("manifests", "/v2/manifests/manifests/tags"),
        ("foo/blobs", "/v2/foo/blobs/manifests/tags"),
        ("foo/blobs/uploads", "/v2/foo/blobs/uploads/manifests/tags"),
        ("tags/list", "/v2/tags/list/manifests/tags"),
        ("foo/referrers", "/v2/foo/referrers/manifests/tags"),
        ("v2", "/v2/v2/manifests/tags"),
        ("docker.com/foo/bar/baz", "/v2/docker.com/foo/bar/baz/manifests/tags"),
    ],
)
async def test_manifest_path_routes_to_the_right_repository(
    client: httpx.AsyncClient, name: str, path: str
) -> None:
    pushed = await push_image(client, name, "tags")
    response = await client.get(path)
    assert response.status_code == 200
    assert response.content == pushed.body


@pytest.mark.parametrize(
    "name", ["foo/bar/manifests", "foo/tags", "tags/list", "foo/blobs/uploads", "foo/referrers"]
)
async def test_tags_list_path_routes_to_the_right_repository(
    client: httpx.AsyncClient, name: str
) -> None:
    await push_image(client, name, "v1")
    response = await client.get(f"/v2/{name}/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": name, "tags": ["v1"]}


@pytest.mark.parametrize("name", ["foo/blobs", "foo/blobs/uploads", "uploads", "blobs/blobs"])
async def test_blob_and_upload_paths_route_to_the_right_repository(
    client: httpx.AsyncClient, name: str
) -> None:
    data = random_bytes()
    response = await client.post(f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202
    location = response.headers["location"]
    assert location.startswith(f"/v2/{name}/blobs/uploads/")
    response = await client.put(location, params={"digest": digest_of(data)}, content=data)
    assert response.status_code == 201
    response = await client.get(f"/v2/{name}/blobs/{digest_of(data)}")
    assert response.content == data


async def test_manifests_segment_before_referrers_is_part_of_the_name(
    client: httpx.AsyncClient,
) -> None:
    """/v2/foo/manifests/referrers/<digest> is the referrers of repository foo/manifests."""
    await push_image(client, "foo/manifests", "v1")
    response = await client.get(f"/v2/foo/manifests/referrers/{unknown_digest()}")
    assert response.status_code == 200
    assert response.json()["manifests"] == []


async def test_catalog_is_not_a_repository(client: httpx.AsyncClient) -> None:
    """`_catalog` is no valid name, so /v2/_catalog/... cannot name a repository."""
    response = await client.get("/v2/_catalog/tags/list")
    assert_error(response, 400, "NAME_INVALID")


# Names the spec's grammar refuses, on every endpoint that takes one (code-8 NAME_INVALID).

INVALID_NAMES = [
    pytest.param("Foo", id="uppercase"),
    pytest.param("foo/Bar", id="uppercase-component"),
    pytest.param("a" * 256, id="256-chars"),
    pytest.param("/".join(["abcdefg"] * 40), id="long-with-slashes"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param("a/", id="trailing-slash"),
    pytest.param("-a", id="leading-dash"),
    pytest.param("a-", id="trailing-dash"),
    pytest.param("a..b", id="double-dot"),
    pytest.param("a___b", id="triple-underscore"),
    pytest.param("a._b", id="mixed-separators"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("%2e%2e", id="dot-dot-encoded"),
    pytest.param("foo/%2e%2e/bar", id="traversal-encoded"),
    pytest.param("%2e%2e/%2e%2e/etc", id="traversal-up-encoded"),
    pytest.param("a%20b", id="space"),
    pytest.param("%E4%B8%8Dbar", id="cjk"),
    pytest.param("caf%C3%A9", id="latin-1-accent"),
    pytest.param("a%00b", id="nul"),
    pytest.param("localhost:5000/foo", id="host-and-port"),
    pytest.param("_catalog", id="underscore-first"),
]

DIGEST = "sha256:" + "0" * 64
ENDPOINTS = [
    ("end-8a", "GET", "/v2/{name}/tags/list"),
    ("end-3", "GET", "/v2/{name}/manifests/latest"),
    ("end-7", "PUT", "/v2/{name}/manifests/latest"),
    ("end-9", "DELETE", f"/v2/{{name}}/manifests/{DIGEST}"),
    ("end-2", "GET", f"/v2/{{name}}/blobs/{DIGEST}"),
    ("end-10", "DELETE", f"/v2/{{name}}/blobs/{DIGEST}"),
    ("end-4a", "POST", "/v2/{name}/blobs/uploads/"),
    ("end-13", "GET", "/v2/{name}/blobs/uploads/" + "0" * 32),
    ("end-5", "PATCH", "/v2/{name}/blobs/uploads/" + "0" * 32),
    ("end-12a", "GET", f"/v2/{{name}}/referrers/{DIGEST}"),
]


@pytest.mark.parametrize("name", INVALID_NAMES)
async def test_invalid_name_is_400_name_invalid_on_every_endpoint(
    client: httpx.AsyncClient, name: str
) -> None:
    for endpoint, method, template in ENDPOINTS:
        response = await client.request(method, template.format(name=name), content=b"{}")
        assert response.status_code == 400, (endpoint, response.text)
        assert error_codes(response) == ["NAME_INVALID"], endpoint


@pytest.mark.parametrize(
    "name",
    [
        "a" * 255,
        "/".join(["a"] * 128),
        "a__b",
        "a---b",
        "a.b_c-d",
        "0",
        "library/ubuntu",
        "a/b/c/d/e/f/g",
    ],
    ids=[
        "255-chars",
        "128-components",
        "double-underscore",
        "dashes",
        "separators",
        "digit",
        "two",
        "deep",
    ],
)
async def test_valid_name_reaches_the_endpoint(client: httpx.AsyncClient, name: str) -> None:
    """spec: names match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/...)*; clients limit them to 255."""
    response = await client.get(f"/v2/{name}/tags/list")
    assert_error(response, 404, "NAME_UNKNOWN")
    digest = await push_blob(client, name, b"x")
    assert (await client.get(f"/v2/{name}/blobs/{digest}")).content == b"x"


# Paths no client should send: unroutable, traversing, or on the wrong method.


async def raw_get(app: Starlette, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written, `..` included (httpx would normalise it away), the way a
    server that does not normalise paths hands it to the app."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"registry.test")],
        "client": ("127.0.0.1", 1234),
        "server": ("registry.test", 80),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return status, body


@pytest.mark.parametrize(
    "path",
    [
        "/v2/foo/../bar/tags/list",
        "/v2/../../etc/passwd/tags/list",
        "/v2/foo/../../blobs/uploads/D95306FA-FAD3-4E36-8D41-CF1C93EF8286",
        f"/v2/../blobs/{DIGEST}",
        "/v2/./foo/tags/list",
        "/v2/foo/./tags/list",
    ],
)
async def test_dot_segments_never_reach_storage(
    app: Starlette, client: httpx.AsyncClient, path: str
) -> None:
    """distribution normalises `../` before routing; Portside refuses such names instead."""
    await push_image(client, "bar", "v1")
    status, body = await raw_get(app, path)
    assert status in {400, 404}
    assert httpx.Response(
        status, content=body, headers={"content-type": "application/json"}
    ).json()["errors"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v3/", 404),
        ("GET", "/v2/foo", 404),
        ("GET", "/v2/foo/bar", 404),
        ("GET", "/v2/foo/tags", 404),
        ("GET", "/v2/foo/manifests/", 404),
        ("GET", "/v2/foo/referrers/", 404),
        ("GET", "/nothing", 404),
        ("POST", "/v2/foo/manifests/latest", 405),
        ("PATCH", "/v2/foo/manifests/latest", 405),
        ("POST", f"/v2/foo/blobs/{DIGEST}", 405),
        ("PUT", f"/v2/foo/blobs/{DIGEST}", 405),
        ("DELETE", "/v2/foo/tags/list", 405),
        ("POST", "/v2/", 405),
        ("PUT", "/v2/foo/blobs/uploads/", 405),
        ("GET", "/v2/foo/blobs/uploads/", 405),
        ("DELETE", "/v2/_catalog", 405),
    ],
)
async def test_unroutable_request_is_an_error_envelope(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert error_codes(response)
    if status == 405:
        assert response.headers["allow"]


async def test_trailing_slash_on_tags_list_redirects_or_404s(client: httpx.AsyncClient) -> None:
    """distribution routes /v2/<name>/tags/list only; a near miss is never a 500."""
    await push_image(client, "app", "v1")
    response = await client.get("/v2/app/tags/list/")
    assert response.status_code in {307, 404}


async def test_reference_with_encoded_slash_is_not_a_tag(client: httpx.AsyncClient) -> None:
    await push_image(client, "app", "v1")
    response = await client.put(
        "/v2/app/manifests/a%2Fb", content=b"{}", headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code in {400, 404}
    assert error_codes(response)
