"""Request bodies that end before they are whole (not in the spec): the client disconnects or
half-closes mid-body, or its chunked encoding is malformed, which the server reports to the app as
a disconnect. Every endpoint that reads a body answers 400 in the envelope (SIZE_INVALID when a
Content-Length was promised, else BLOB_UPLOAD_INVALID, or MANIFEST_INVALID for a manifest), keeps
nothing of it, and an upload session goes on from its acknowledged offset.

httpx's in-process transport cannot cut a body short, so these requests are ASGI calls whose
`receive` yields part of the body, then `http.disconnect`, as granian does. The same requests over
real sockets against `portside serve` are in tests/e2e/test_e2e_incomplete_body.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    random_bytes,
    start_upload,
    to_json,
)
from starlette.applications import Starlette
from starlette.types import Message


async def cut_short(
    app: Starlette,
    method: str,
    url: str,
    sent: bytes,
    *,
    declared: int | None,
    content_type: str = "application/octet-stream",
) -> tuple[int, dict[str, Any]]:
    """Send `sent` as the start of a body (of `declared` bytes, else chunked), then disconnect;
    the status and the JSON body of the answer."""
    path, _, query = url.partition("?")
    headers = [(b"host", b"registry.test"), (b"content-type", content_type.encode())]
    if declared is None:
        headers.append((b"transfer-encoding", b"chunked"))
    else:
        headers.append((b"content-length", str(declared).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("registry.test", 80),
    }
    incoming: list[Message] = [
        {"type": "http.request", "body": sent[:3], "more_body": True},
        {"type": "http.request", "body": sent[3:], "more_body": True},
        {"type": "http.disconnect"},
    ]
    answer: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if len(incoming) > 1 else incoming[0]

    async def send(message: Message) -> None:
        answer.append(message)

    await app(scope, receive, send)
    start = next(message for message in answer if message["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def code_of(document: dict[str, Any]) -> str:
    code: str = document["errors"][0]["code"]
    return code


async def assert_offset(client: httpx.AsyncClient, location: str, offset: int) -> None:
    """end-13: the upload is there, at offset."""
    response = await client.get(location)
    assert response.status_code == 204, response.text
    assert response.headers["range"] == f"0-{max(offset - 1, 0)}"


CASES = [(100, "SIZE_INVALID"), (None, "BLOB_UPLOAD_INVALID")]


@pytest.mark.parametrize(("declared", "code"), CASES, ids=["content-length", "chunked"])
async def test_patch_cut_short_is_400_and_the_upload_goes_on_from_its_offset(
    app: Starlette, client: httpx.AsyncClient, declared: int | None, code: str
) -> None:
    data = random_bytes(300)
    location = await start_upload(client, "team/app")
    first = await client.patch(
        location, content=data[:100], headers={"Content-Type": "application/octet-stream"}
    )
    assert first.status_code == 202, first.text

    status, document = await cut_short(app, "PATCH", location, data[100:140], declared=declared)

    assert (status, code_of(document)) == (400, code)
    await assert_offset(client, location, 100)
    rest = await client.patch(
        location,
        content=data[100:],
        headers={"Content-Type": "application/octet-stream", "Content-Range": "100-299"},
    )
    assert rest.status_code == 202, rest.text
    done = await client.put(location, params={"digest": digest_of(data)})
    assert done.status_code == 201, done.text
    assert (await client.get(f"/v2/team/app/blobs/{digest_of(data)}")).content == data


@pytest.mark.parametrize("first", [0, 100], ids=["empty-upload", "after-a-chunk"])
@pytest.mark.parametrize(("declared", "code"), CASES, ids=["content-length", "chunked"])
async def test_closing_put_cut_short_is_400_and_the_upload_stays(
    app: Starlette, client: httpx.AsyncClient, first: int, declared: int | None, code: str
) -> None:
    data = random_bytes(300)
    location = await start_upload(client, "team/app")
    if first:
        response = await client.patch(
            location, content=data[:first], headers={"Content-Type": "application/octet-stream"}
        )
        assert response.status_code == 202, response.text
    url = f"{location}?digest={digest_of(data)}"

    status, document = await cut_short(app, "PUT", url, data[first : first + 40], declared=declared)

    assert (status, code_of(document)) == (400, code)
    await assert_offset(client, location, first)
    assert (await client.head(f"/v2/team/app/blobs/{digest_of(data)}")).status_code == 404
    done = await client.put(url, content=data[first:])
    assert done.status_code == 201, done.text


@pytest.mark.parametrize(("declared", "code"), CASES, ids=["content-length", "chunked"])
async def test_monolithic_post_cut_short_is_400_and_stores_nothing(
    app: Starlette, client: httpx.AsyncClient, declared: int | None, code: str
) -> None:
    data = random_bytes(300)
    url = f"/v2/team/app/blobs/uploads/?digest={digest_of(data)}"

    status, document = await cut_short(app, "POST", url, data[:40], declared=declared)

    assert (status, code_of(document)) == (400, code)
    assert (await client.head(f"/v2/team/app/blobs/{digest_of(data)}")).status_code == 404
    assert await push_blob(client, "team/app", data) == digest_of(data)


@pytest.mark.parametrize(
    ("declared", "code"),
    [(5000, "SIZE_INVALID"), (None, "MANIFEST_INVALID")],
    ids=["cl", "chunked"],
)
async def test_manifest_put_cut_short_is_400_and_stores_nothing(
    app: Starlette, client: httpx.AsyncClient, declared: int | None, code: str
) -> None:
    config = random_bytes()
    layer = random_bytes()
    for blob in (config, layer):
        await push_blob(client, "team/app", blob)
    manifest = to_json(
        image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)])
    )

    status, document = await cut_short(
        app,
        "PUT",
        "/v2/team/app/manifests/1.0",
        manifest[:50],
        declared=declared,
        content_type=OCI_MANIFEST,
    )

    assert (status, code_of(document)) == (400, code)
    assert_error(await client.get("/v2/team/app/manifests/1.0"), 404, "MANIFEST_UNKNOWN")
