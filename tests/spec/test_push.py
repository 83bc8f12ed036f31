"""Push: blob uploads, monolithic, streamed and chunked (end-4a, end-4b, end-5, end-6, end-13),
cancelling them, and mounting (end-11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from helpers import (
    ClientFactory,
    assert_error,
    digest_of,
    push_blob,
    random_bytes,
    start_upload,
    unknown_digest,
)

from portside.registry.ingest import SMALL_BLOB_BYTES

OCTETS = {"Content-Type": "application/octet-stream"}
# A whole blob up to SMALL_BLOB_BYTES is checked in memory and put in place; a larger one is
# written aside and moved: whole-blob pushes are tried on both sides of that line.
WHOLE_SIZES = pytest.mark.parametrize(
    "size", [5000, SMALL_BLOB_BYTES, SMALL_BLOB_BYTES + 1], ids=["small", "at-limit", "large"]
)


async def assert_pullable(client: httpx.AsyncClient, location: str, data: bytes) -> None:
    response = await client.get(location)
    assert response.status_code == 200
    assert response.content == data


def chunk_headers(start: int, data: bytes) -> dict[str, str]:
    return {**OCTETS, "Content-Range": f"{start}-{start + len(data) - 1}"}


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length: httpx sends it with chunked transfer encoding."""
    for part in parts:
        yield part


# monolithic: a single POST (end-4b)


@WHOLE_SIZES
async def test_single_post_is_201_with_location_and_digest(
    client: httpx.AsyncClient, size: int
) -> None:
    """end-4b: "Successful completion of the request MUST return a 201 Created and MUST include
    the following header: Location: <blob-location>" ("a pullable blob URL")."""
    data = random_bytes(size)
    digest = digest_of(data)
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, content=data, headers=OCTETS
    )
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["location"] == f"/v2/app/blobs/{digest}"
    await assert_pullable(client, response.headers["location"], data)


@WHOLE_SIZES
async def test_single_post_with_wrong_digest_is_400_digest_invalid(
    client: httpx.AsyncClient, size: int
) -> None:
    """end-4b fails with 400; code-4 DIGEST_INVALID "provided digest did not match uploaded
    content". Nothing becomes readable."""
    wrong = unknown_digest()
    data = random_bytes(size)
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": wrong}, content=data, headers=OCTETS
    )
    assert_error(response, 400, "DIGEST_INVALID")
    response = await client.head(f"/v2/app/blobs/{wrong}")
    assert response.status_code == 404
    response = await client.head(f"/v2/app/blobs/{digest_of(data)}")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "digest",
    ["", "sha256", "sha256:abc", "sha256:" + "Z" * 64, "md5:" + "0" * 32, "nope"],
    ids=["empty", "no-colon", "short", "not-hex", "unregistered-algorithm", "garbage"],
)
async def test_single_post_with_malformed_digest_is_400_digest_invalid(
    client: httpx.AsyncClient, digest: str
) -> None:
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, content=b"data", headers=OCTETS
    )
    assert_error(response, 400, "DIGEST_INVALID")


async def test_single_post_with_wrong_content_length_is_400_size_invalid(
    client: httpx.AsyncClient,
) -> None:
    """end-4b: "The Content-Length header MUST match the blob's actual content length";
    code-10 SIZE_INVALID."""
    data = random_bytes(100)
    response = await client.post(
        "/v2/app/blobs/uploads/",
        params={"digest": digest_of(data)},
        content=data,
        headers={**OCTETS, "Content-Length": "99"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "SIZE_INVALID"


# monolithic: POST then PUT (end-4a, end-6)


async def test_post_starts_an_upload_with_202_and_location(client: httpx.AsyncClient) -> None:
    """end-4a: "the response MUST have a code of 202 Accepted, and MUST include ... Location",
    which "MUST contain a UUID representing a unique session ID"."""
    response = await client.post("/v2/app/blobs/uploads/", headers={"Content-Length": "0"})
    assert response.status_code == 202
    location = response.headers["location"]
    assert location.startswith("/v2/app/blobs/uploads/")
    upload_id = location.rsplit("/", 1)[1]
    assert len(upload_id) >= 32
    assert response.headers["docker-upload-uuid"] == upload_id
    # distribution reports an empty upload as 0-0
    assert response.headers["range"] == "0-0"
    second = await client.post("/v2/app/blobs/uploads/")
    assert second.headers["location"] != location


@WHOLE_SIZES
async def test_post_then_put_with_body_is_201(client: httpx.AsyncClient, size: int) -> None:
    """end-6: "the response MUST have code 201 Created and MUST have ... Location"."""
    data = random_bytes(size)
    digest = digest_of(data)
    location = await start_upload(client, "app")
    response = await client.put(location, params={"digest": digest}, content=data, headers=OCTETS)
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/app/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    await assert_pullable(client, response.headers["location"], data)


async def test_post_then_put_of_empty_blob_is_201(client: httpx.AsyncClient) -> None:
    location = await start_upload(client, "app")
    response = await client.put(location, params={"digest": digest_of(b"")})
    assert response.status_code == 201
    await assert_pullable(client, response.headers["location"], b"")


async def test_put_with_wrong_digest_is_400_and_ends_the_upload(
    client: httpx.AsyncClient,
) -> None:
    """distribution cancels the upload when its digest does not match (code-4)."""
    location = await start_upload(client, "app")
    response = await client.put(
        location, params={"digest": unknown_digest()}, content=b"data", headers=OCTETS
    )
    assert_error(response, 400, "DIGEST_INVALID")
    response = await client.get(location)
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("params", [{}, {"digest": "sha256:abc"}], ids=["missing", "malformed"])
async def test_put_without_a_valid_digest_is_400_digest_invalid(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """end-6: "The closing PUT request MUST include the <digest> of the whole blob"."""
    location = await start_upload(client, "app")
    response = await client.put(location, params=params, content=b"data", headers=OCTETS)
    assert_error(response, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
async def test_registered_digest_algorithms_work(client: httpx.AsyncClient, algorithm: str) -> None:
    """image-spec descriptor.md registers sha256 and sha512; both push and pull."""
    data = random_bytes(2000)
    digest = digest_of(data, algorithm)
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, content=data, headers=OCTETS
    )
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    location = await start_upload(client, "other")
    await client.patch(location, content=data[:700], headers=OCTETS)
    response = await client.put(location, params={"digest": digest}, content=data[700:])
    assert response.status_code == 201
    for name in ("app", "other"):
        await assert_pullable(client, f"/v2/{name}/blobs/{digest}", data)


async def test_sha512_digest_of_other_content_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/app/blobs/uploads/",
        params={"digest": digest_of(b"other", "sha512")},
        content=b"data",
        headers=OCTETS,
    )
    assert_error(response, 400, "DIGEST_INVALID")


# streamed: PATCH without Content-Range, then PUT without body


async def test_streamed_patches_then_empty_put_is_201(client: httpx.AsyncClient) -> None:
    data = random_bytes(10_000)
    location = await start_upload(client, "app")
    response = await client.patch(location, content=stream(data[:4000], data[4000:7000]))
    assert response.status_code == 202
    assert response.headers["range"] == "0-6999"
    location = response.headers["location"]
    response = await client.patch(location, content=data[7000:], headers=OCTETS)
    assert response.status_code == 202
    assert response.headers["range"] == f"0-{len(data) - 1}"
    response = await client.put(response.headers["location"], params={"digest": digest_of(data)})
    assert response.status_code == 201
    await assert_pullable(client, response.headers["location"], data)


async def test_streamed_put_without_content_length_is_201(client: httpx.AsyncClient) -> None:
    data = random_bytes(3000)
    location = await start_upload(client, "app")
    response = await client.put(
        location, params={"digest": digest_of(data)}, content=stream(data[:1000], data[1000:])
    )
    assert response.status_code == 201
    await assert_pullable(client, response.headers["location"], data)


# chunked: PATCH with Content-Range (end-5), upload status (end-13), closing PUT (end-6)


async def test_chunks_in_order_are_202_with_range_and_location(
    client: httpx.AsyncClient,
) -> None:
    """end-5: "Each successful chunk upload MUST have a 202 Accepted response code, and MUST have
    the following headers: Location: <location>, Range: 0-<end-of-range>"."""
    data = random_bytes(3000)
    location = await start_upload(client, "app")
    for start in range(0, len(data), 1000):
        chunk = data[start : start + 1000]
        response = await client.patch(location, content=chunk, headers=chunk_headers(start, chunk))
        assert response.status_code == 202
        assert response.headers["range"] == f"0-{start + len(chunk) - 1}"
        assert response.headers["content-length"] == "0"
        location = response.headers["location"]
    response = await client.put(location, params={"digest": digest_of(data)})
    assert response.status_code == 201
    await assert_pullable(client, response.headers["location"], data)


async def test_put_may_carry_the_final_chunk(client: httpx.AsyncClient) -> None:
    """spec: "The final chunk MAY be uploaded using a PATCH request or it MAY be uploaded in the
    closing PUT request"."""
    data = random_bytes(2000)
    location = await start_upload(client, "app")
    response = await client.patch(
        location, content=data[:1500], headers=chunk_headers(0, data[:1500])
    )
    assert response.status_code == 202
    response = await client.put(
        response.headers["location"],
        params={"digest": digest_of(data)},
        content=data[1500:],
        headers=chunk_headers(1500, data[1500:]),
    )
    assert response.status_code == 201
    await assert_pullable(client, response.headers["location"], data)


async def test_content_range_may_carry_a_bytes_unit_and_total(client: httpx.AsyncClient) -> None:
    """Clients send `bytes 0-9/10` (RFC 9110 form) as well as the spec's `0-9`; both are read."""
    data = random_bytes(10)
    location = await start_upload(client, "app")
    response = await client.patch(
        location, content=data, headers={**OCTETS, "Content-Range": "bytes 0-9/10"}
    )
    assert response.status_code == 202
    assert response.headers["range"] == "0-9"


@pytest.mark.parametrize(
    ("first", "second_start"),
    [(0, 2000), (0, 500), (0, 0)],
    ids=["gap", "overlap", "repeat"],
)
async def test_chunk_out_of_order_is_416(
    client: httpx.AsyncClient, first: int, second_start: int
) -> None:
    """end-5: "If a chunk is uploaded out of order, the registry MUST respond with a 416
    Requested Range Not Satisfiable code"; the upload keeps its offset."""
    data = random_bytes(1000)
    location = await start_upload(client, "app")
    response = await client.patch(location, content=data, headers=chunk_headers(first, data))
    assert response.status_code == 202
    response = await client.patch(location, content=data, headers=chunk_headers(second_start, data))
    assert response.status_code == 416
    assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    status = await client.get(location)
    assert status.headers["range"] == "0-999"


async def test_first_chunk_not_at_zero_is_416(client: httpx.AsyncClient) -> None:
    """end-5: "The first chunk's range MUST begin with 0"."""
    location = await start_upload(client, "app")
    response = await client.patch(location, content=b"abc", headers=chunk_headers(1, b"abc"))
    assert response.status_code == 416


@pytest.mark.parametrize("value", ["10-5", "abc", "0-", "-5"])
async def test_malformed_content_range_is_416(client: httpx.AsyncClient, value: str) -> None:
    """end-5: the range "MUST match ^[0-9]+-[0-9]+$"; one that does not is no satisfiable
    range (distribution answers a backwards range with 416 too)."""
    location = await start_upload(client, "app")
    response = await client.patch(
        location, content=b"abc", headers={**OCTETS, "Content-Range": value}
    )
    assert response.status_code == 416
    assert response.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"


async def test_chunk_shorter_than_its_range_is_400_size_invalid(
    client: httpx.AsyncClient,
) -> None:
    """code-10 SIZE_INVALID: "provided length did not match content length"; the bytes of the
    failed chunk are dropped, so the client can send it again."""
    location = await start_upload(client, "app")
    response = await client.patch(
        location, content=b"abc", headers={**OCTETS, "Content-Range": "0-9"}
    )
    assert_error(response, 400, "SIZE_INVALID")
    status = await client.get(location)
    assert status.headers["range"] == "0-0"
    response = await client.patch(location, content=b"abc", headers=chunk_headers(0, b"abc"))
    assert response.status_code == 202
    response = await client.put(location, params={"digest": digest_of(b"abc")})
    assert response.status_code == 201


async def test_upload_status_is_204_with_range_and_location(client: httpx.AsyncClient) -> None:
    """end-13: "The response to an active upload <location> MUST be a 204 No Content response
    code, and MUST have the following headers: Location, Range: 0-<end-of-range>"."""
    location = await start_upload(client, "app")
    response = await client.get(location)
    assert response.status_code == 204
    assert response.headers["location"] == location
    assert response.headers["range"] == "0-0"
    await client.patch(location, content=b"x" * 1234, headers=chunk_headers(0, b"x" * 1234))
    response = await client.get(location)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["range"] == "0-1233"
    assert response.headers["location"] == location


async def test_push_resumes_after_416_from_the_status(client: httpx.AsyncClient) -> None:
    """The spec's "Resumable Push": on 416, GET the status, continue from <end-of-range> + 1."""
    data = random_bytes(3000)
    location = await start_upload(client, "app")
    await client.patch(location, content=data[:1000], headers=chunk_headers(0, data[:1000]))
    response = await client.patch(
        location, content=data[2000:], headers=chunk_headers(2000, data[2000:])
    )
    assert response.status_code == 416
    status = await client.get(location)
    offset = int(status.headers["range"].split("-")[1]) + 1
    response = await client.patch(
        status.headers["location"],
        content=data[offset:],
        headers=chunk_headers(offset, data[offset:]),
    )
    assert response.status_code == 202
    response = await client.put(response.headers["location"], params={"digest": digest_of(data)})
    assert response.status_code == 201
    await assert_pullable(client, response.headers["location"], data)


async def test_finished_upload_is_gone(client: httpx.AsyncClient) -> None:
    location = await start_upload(client, "app")
    response = await client.put(location, params={"digest": digest_of(b"abc")}, content=b"abc")
    assert response.status_code == 201
    response = await client.get(location)
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    response = await client.put(location, params={"digest": digest_of(b"abc")}, content=b"abc")
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


# cancel (DELETE of an upload; distribution's endpoint, spec detail.md)


async def test_delete_upload_cancels_it(client: httpx.AsyncClient) -> None:
    location = await start_upload(client, "app")
    await client.patch(location, content=b"abc", headers=OCTETS)
    response = await client.delete(location)
    assert response.status_code == 204
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        params = {"digest": digest_of(b"abc")} if method == "PUT" else None
        response = await client.request(method, location, params=params)
        assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


# unknown uploads (code-3)


@pytest.mark.parametrize(
    "upload_id",
    ["0" * 32, "not-an-upload", "D95306FA-FAD3-4E36-8D41-CF1C93EF8286", "%2e%2e", "a" * 300],
    ids=["unknown", "malformed", "uuid-form", "dot-dot", "long"],
)
@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
async def test_unknown_upload_is_404_blob_upload_unknown(
    client: httpx.AsyncClient, upload_id: str, method: str
) -> None:
    """end-5, end-6, end-13 fail with 404; code-3 BLOB_UPLOAD_UNKNOWN."""
    params = {"digest": digest_of(b"abc")} if method == "PUT" else None
    response = await client.request(
        method, f"/v2/app/blobs/uploads/{upload_id}", params=params, content=b"abc"
    )
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
async def test_upload_of_repo_a_is_unknown_in_repo_b(
    client: httpx.AsyncClient, method: str
) -> None:
    location = await start_upload(client, "repo-a")
    elsewhere = location.replace("/v2/repo-a/", "/v2/repo-b/")
    params = {"digest": digest_of(b"abc")} if method == "PUT" else None
    response = await client.request(method, elsewhere, params=params, content=b"abc")
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    # ...and the upload in repo-a is untouched
    response = await client.put(location, params={"digest": digest_of(b"abc")}, content=b"abc")
    assert response.status_code == 201


async def test_put_to_unknown_upload_outranks_a_missing_digest(client: httpx.AsyncClient) -> None:
    response = await client.put("/v2/app/blobs/uploads/" + "0" * 32, content=b"abc")
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


# mount (end-11)


async def test_mount_from_a_repository_holding_the_blob_is_201(
    client: httpx.AsyncClient,
) -> None:
    """end-11: "The response to a successful mount MUST be 201 Created, and MUST contain ...
    Location: <blob-location>"."""
    data = random_bytes()
    digest = await push_blob(client, "source/repo", data)
    response = await client.post(
        "/v2/target/blobs/uploads/", params={"mount": digest, "from": "source/repo"}
    )
    assert response.status_code == 201
    assert response.headers["location"] == f"/v2/target/blobs/{digest}"
    assert response.headers["docker-content-digest"] == digest
    await assert_pullable(client, response.headers["location"], data)


@pytest.mark.parametrize(
    "source",
    ["empty-repo", "no-such-repo", None, "Not/A/Valid/Name"],
    ids=["lacks-blob", "unknown-repo", "no-from", "invalid-from"],
)
async def test_mount_that_cannot_happen_falls_back_to_a_new_upload(
    client: httpx.AsyncClient, source: str | None
) -> None:
    """end-11: "if a registry ... is unable to mount the requested blob, it SHOULD return a 202.
    This indicates that the upload session has begun"; the blob stays unreadable in target."""
    digest = await push_blob(client, "holder", random_bytes())
    await push_blob(client, "empty-repo", random_bytes())
    params = {"mount": digest} if source is None else {"mount": digest, "from": source}
    response = await client.post("/v2/target/blobs/uploads/", params=params)
    assert response.status_code == 202
    location = response.headers["location"]
    assert location.startswith("/v2/target/blobs/uploads/")
    assert (await client.get(location)).status_code == 204
    assert (await client.head(f"/v2/target/blobs/{digest}")).status_code == 404


async def test_mount_with_malformed_digest_is_400_digest_invalid(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v2/target/blobs/uploads/", params={"mount": "sha256:nope", "from": "holder"}
    )
    assert_error(response, 400, "DIGEST_INVALID")


async def test_mounted_blob_stays_after_the_source_deletes_it(client: httpx.AsyncClient) -> None:
    data = random_bytes()
    digest = await push_blob(client, "source", data)
    response = await client.post(
        "/v2/target/blobs/uploads/", params={"mount": digest, "from": "source"}
    )
    assert response.status_code == 201
    assert (await client.delete(f"/v2/source/blobs/{digest}")).status_code == 202
    await assert_pullable(client, f"/v2/target/blobs/{digest}", data)


# limits and races


async def test_blob_over_max_blob_size_is_413(make_client: ClientFactory) -> None:
    """A registry may limit what it stores; 413 Payload Too Large, as for manifests (end-7)."""
    client = await make_client(max_blob_size=1000)
    data = random_bytes(1001)
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data, headers=OCTETS
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "SIZE_INVALID"
    # at the limit is fine
    assert (await push_blob(client, "app", data[:1000])).startswith("sha256:")


async def test_chunks_past_max_blob_size_are_413(make_client: ClientFactory) -> None:
    client = await make_client(max_blob_size=1000)
    location = await start_upload(client, "app")
    response = await client.patch(
        location, content=b"a" * 600, headers=chunk_headers(0, b"a" * 600)
    )
    assert response.status_code == 202
    response = await client.patch(
        location, content=b"b" * 600, headers=chunk_headers(600, b"b" * 600)
    )
    assert response.status_code == 413
    # without a Content-Length the limit still holds, counted as bytes arrive
    response = await client.patch(location, content=stream(b"c" * 300, b"d" * 300))
    assert response.status_code == 413
    status = await client.get(location)
    assert status.headers["range"] == "0-599"


async def test_concurrent_uploads_of_the_same_content_both_succeed(
    client: httpx.AsyncClient,
) -> None:
    """The spec's "Layer Upload De-duplication": "both operations will proceed and the first to
    complete will be stored in the registry"."""
    data = random_bytes(50_000)
    digest = digest_of(data)

    async def upload(name: str) -> int:
        location = await start_upload(client, name)
        response = await client.patch(location, content=data[:25_000], headers=OCTETS)
        response = await client.patch(
            response.headers["location"], content=stream(data[25_000:]), headers=OCTETS
        )
        response = await client.put(response.headers["location"], params={"digest": digest})
        return response.status_code

    assert await asyncio.gather(upload("app"), upload("app"), upload("other")) == [201, 201, 201]
    for name in ("app", "other"):
        await assert_pullable(client, f"/v2/{name}/blobs/{digest}", data)


async def test_pushing_a_blob_again_is_201(client: httpx.AsyncClient) -> None:
    data = random_bytes()
    first = await push_blob(client, "app", data)
    assert await push_blob(client, "app", data) == first
    await assert_pullable(client, f"/v2/app/blobs/{first}", data)


@pytest.mark.parametrize(
    ("data", "headers", "digest", "status"),
    [
        (b"a" * 2000, {}, digest_of(b"a" * 2000), 413),
        (b"data", {"Content-Length": "3"}, digest_of(b"data"), 400),
        (b"data", {}, digest_of(b"other"), 400),
    ],
    ids=["too-large", "short", "wrong-digest"],
)
async def test_refused_single_post_leaves_no_upload_behind(
    make_client: ClientFactory,
    registry_root: Path,
    data: bytes,
    headers: dict[str, str],
    digest: str,
    status: int,
) -> None:
    """The upload session of a single POST is the registry's own; a refusal ends it (white box:
    nothing is left under the storage's uploads/ folder)."""
    client = await make_client(max_blob_size=1000)
    response = await client.post(
        "/v2/app/blobs/uploads/", params={"digest": digest}, content=data, headers=headers
    )
    assert response.status_code == status
    assert [path for path in registry_root.rglob("uploads/*") if path.is_file()] == []


@pytest.mark.parametrize("ranged", [True, False], ids=["chunked", "streamed"])
@pytest.mark.parametrize("offset", [0, 500], ids=["first-chunk", "later-chunk"])
async def test_concurrent_chunks_to_one_upload_never_store_wrong_bytes(
    client: httpx.AsyncClient, ranged: bool, offset: int
) -> None:
    """Two PATCHes racing on one upload: one wins (202), the other is out of order (416); and
    whatever the closing PUT claims, a blob is only ever stored under the digest of its bytes
    (spec: Docker-Content-Digest "MUST be a digest matching that of the response body")."""
    head, x, y = random_bytes(offset), b"X" * 1000, b"Y" * 1000
    location = await start_upload(client, "app")
    if head:
        await client.patch(location, content=head, headers=chunk_headers(0, head))

    def headers(data: bytes) -> dict[str, str]:
        return chunk_headers(offset, data) if ranged else OCTETS

    first, second = await asyncio.gather(
        client.patch(location, content=x, headers=headers(x)),
        client.patch(location, content=y, headers=headers(y)),
    )
    statuses = sorted([first.status_code, second.status_code])
    # Interleaved, one loses with 416; a streamed pair that happens to run one after the other
    # is simply two chunks, in an order the client cannot know.
    assert statuses == [202, 416] or (not ranged and statuses == [202, 202])
    if statuses == [202, 416]:
        winner = x if first.status_code == 202 else y
        digest = digest_of(head + winner)
        response = await client.put(location, params={"digest": digest})
        assert response.status_code == 201, response.text
        await assert_pullable(client, f"/v2/app/blobs/{digest}", head + winner)
        return
    # A guess at the order: right, the blob is those bytes; wrong, DIGEST_INVALID.
    digest = digest_of(head + x + y)
    response = await client.put(location, params={"digest": digest})
    if response.status_code == 201:
        await assert_pullable(client, f"/v2/app/blobs/{digest}", head + x + y)
    else:
        assert_error(response, 400, "DIGEST_INVALID")


async def test_concurrent_closing_puts_finish_once(client: httpx.AsyncClient) -> None:
    data = random_bytes(1000)
    location = await start_upload(client, "app")
    await client.patch(location, content=data, headers=OCTETS)
    responses = await asyncio.gather(
        *(client.put(location, params={"digest": digest_of(data)}) for _ in range(3))
    )
    statuses = sorted(r.status_code for r in responses)
    # A PUT that finds another writing the upload's bytes is refused at once (416).
    assert statuses[0] == 201
    assert set(statuses[1:]) <= {201, 404, 416}
    await assert_pullable(client, f"/v2/app/blobs/{digest_of(data)}", data)


async def test_a_put_retried_after_a_crash_between_storing_and_recording_the_blob_completes(
    client: httpx.AsyncClient, registry_root: Path
) -> None:
    """White box: the state a SIGKILL leaves when the closing PUT had moved the upload's bytes to
    the blob's key but not recorded the blob. The retried PUT finds them, checks them, and
    completes (201); the upload session is then over."""
    data = random_bytes(3000)
    digest = digest_of(data)
    location = await start_upload(client, "app")
    await client.patch(location, content=data, headers=OCTETS)
    upload_id = location.rsplit("/", 1)[1]
    stored = registry_root / "registry-1" / "uploads" / upload_id
    blob = registry_root / "registry-1" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    blob.parent.mkdir(parents=True)
    stored.rename(blob)

    response = await client.put(location, params={"digest": digest})
    assert response.status_code == 201, response.text
    await assert_pullable(client, f"/v2/app/blobs/{digest}", data)
    assert (await client.get(location)).status_code == 404


async def test_a_retried_put_does_not_complete_from_a_blob_of_other_bytes(
    client: httpx.AsyncClient, registry_root: Path
) -> None:
    data = random_bytes(3000)
    digest = digest_of(data)
    location = await start_upload(client, "app")
    await client.patch(location, content=data, headers=OCTETS)
    upload_id = location.rsplit("/", 1)[1]
    (registry_root / "registry-1" / "uploads" / upload_id).unlink()
    blob = registry_root / "registry-1" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    blob.parent.mkdir(parents=True)
    blob.write_bytes(random_bytes(3000))

    response = await client.put(location, params={"digest": digest})
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
