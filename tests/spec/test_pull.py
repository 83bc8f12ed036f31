"""Pull: manifests and blobs by GET and HEAD (end-2, end-3), content negotiation, Range requests."""

from __future__ import annotations

import httpx
import pytest
from helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_FOR,
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    digest_of,
    push_blob,
    push_image,
    push_index,
    random_bytes,
    unknown_digest,
)

FLAVOURS = pytest.mark.parametrize(
    "media_type", [OCI_MANIFEST, DOCKER_MANIFEST], ids=["oci", "docker"]
)


# manifests (end-3)


@FLAVOURS
@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_get_manifest_is_200_with_the_bytes_as_pushed(
    client: httpx.AsyncClient, media_type: str, by: str
) -> None:
    """end-3: "A GET request to an existing manifest URL MUST provide the expected manifest",
    with Content-Type as pushed and the digest in Docker-Content-Digest."""
    pushed = await push_image(client, "library/app", "v1", media_type)
    reference = "v1" if by == "tag" else pushed.digest
    response = await client.get(f"/v2/library/app/manifests/{reference}")
    assert response.status_code == 200
    assert response.content == pushed.body
    assert response.headers["content-type"] == media_type
    assert response.headers["docker-content-digest"] == pushed.digest
    assert response.headers["content-length"] == str(pushed.size)


@FLAVOURS
@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_head_manifest_is_200_with_headers_and_no_body(
    client: httpx.AsyncClient, media_type: str, by: str
) -> None:
    """end-3 HEAD: 200, Docker-Content-Digest and Content-Length of the manifest, no body."""
    pushed = await push_image(client, "app", "v1", media_type)
    reference = "v1" if by == "tag" else pushed.digest
    response = await client.head(f"/v2/app/manifests/{reference}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == media_type
    assert response.headers["docker-content-digest"] == pushed.digest
    assert response.headers["content-length"] == str(pushed.size)


@FLAVOURS
async def test_get_index_is_served_with_its_own_media_type(
    client: httpx.AsyncClient, media_type: str
) -> None:
    child = await push_image(client, "multi", None, media_type)
    index = await push_index(client, "multi", [child], "v1", INDEX_FOR[media_type])
    response = await client.get("/v2/multi/manifests/v1")
    assert response.status_code == 200
    assert response.content == index.body
    assert response.headers["content-type"] == INDEX_FOR[media_type]
    assert response.headers["docker-content-digest"] == index.digest


@pytest.mark.parametrize("reference", ["missing", "sha256:" + "0" * 64], ids=["tag", "digest"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_unknown_manifest_is_404_manifest_unknown(
    client: httpx.AsyncClient, reference: str, method: str
) -> None:
    """end-3: "If the manifest is not found in the repository, the response code MUST be 404";
    code-7 MANIFEST_UNKNOWN."""
    await push_image(client, "app", "v1")
    response = await client.request(method, f"/v2/app/manifests/{reference}")
    assert response.status_code == 404
    if method == "GET":
        assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_manifest_in_unknown_repository_is_404(client: httpx.AsyncClient) -> None:
    """spec: "An attempt to pull a nonexistent repository MUST return response code 404"."""
    response = await client.get("/v2/nobody/home/manifests/latest")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] in {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}


@pytest.mark.parametrize(
    "reference",
    ["sha256:abc", "sha256:" + "A" * 64, "md5:" + "0" * 32, "sha256:" + "0" * 63 + "g"],
    ids=["short", "uppercase", "unregistered-algorithm", "not-hex"],
)
async def test_get_manifest_by_malformed_digest_is_404(
    client: httpx.AsyncClient, reference: str
) -> None:
    """end-3 fails only with 404: a reference that is no digest names no manifest (distribution
    treats it as a tag it does not have: MANIFEST_UNKNOWN)."""
    await push_image(client, "app", "v1")
    response = await client.get(f"/v2/app/manifests/{reference}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_manifest_of_repo_a_is_not_readable_in_repo_b(client: httpx.AsyncClient) -> None:
    pushed = await push_image(client, "repo-a", "v1")
    await push_image(client, "repo-b", "other")
    response = await client.get(f"/v2/repo-b/manifests/{pushed.digest}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    response = await client.get("/v2/repo-b/manifests/v1")
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_tag_follows_the_newest_push(client: httpx.AsyncClient) -> None:
    first = await push_image(client, "app", "latest")
    second = await push_image(client, "app", "latest")
    response = await client.get("/v2/app/manifests/latest")
    assert response.headers["docker-content-digest"] == second.digest
    response = await client.get(f"/v2/app/manifests/{first.digest}")
    assert response.status_code == 200


# content negotiation (content-negotiation.md; distribution's rules)


@pytest.mark.parametrize(
    "accept",
    [
        OCI_MANIFEST,
        f"{DOCKER_MANIFEST}, {OCI_MANIFEST}",
        f"{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST};q=0.5",
        "*/*",
        "application/*",
        None,
    ],
    ids=["exact", "among-others", "with-parameters", "any", "any-application", "no-accept"],
)
async def test_oci_manifest_is_served_when_accept_admits_it(
    client: httpx.AsyncClient, accept: str | None
) -> None:
    pushed = await push_image(client, "app", "v1", OCI_MANIFEST)
    headers = {} if accept is None else {"Accept": accept}
    response = await client.get("/v2/app/manifests/v1", headers=headers)
    assert response.status_code == 200
    assert response.content == pushed.body
    assert response.headers["content-type"] == OCI_MANIFEST


async def test_accept_given_as_several_headers_is_read_whole(client: httpx.AsyncClient) -> None:
    await push_image(client, "app", "v1", OCI_MANIFEST)
    headers = [("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)]
    response = await client.get("/v2/app/manifests/v1", headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, OCI_INDEX])
async def test_oci_type_refused_by_accept_is_404_manifest_unknown(
    client: httpx.AsyncClient, media_type: str
) -> None:
    """distribution: an OCI manifest or index "found, but accept header does not support" it is
    MANIFEST_UNKNOWN (the spec leaves negotiation to RFC 7231 and content-negotiation.md)."""
    child = await push_image(client, "app", "child", OCI_MANIFEST)
    if media_type == OCI_INDEX:
        await push_index(client, "app", [child], "v1")
    else:
        await push_image(client, "app", "v1")
    response = await client.get(
        "/v2/app/manifests/v1", headers={"Accept": f"{DOCKER_MANIFEST}, {DOCKER_LIST}"}
    )
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_docker_manifest_is_served_as_stored_whatever_accept_says(
    client: httpx.AsyncClient,
) -> None:
    """Like distribution: no conversion, a Docker manifest goes out as pushed."""
    pushed = await push_image(client, "app", "v1", DOCKER_MANIFEST)
    response = await client.get("/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert response.content == pushed.body


async def test_manifest_etag_revalidates_with_304(client: httpx.AsyncClient) -> None:
    await push_image(client, "app", "v1")
    first = await client.get("/v2/app/manifests/v1")
    response = await client.get(
        "/v2/app/manifests/v1", headers={"If-None-Match": first.headers["etag"]}
    )
    assert response.status_code == 304
    assert response.content == b""


# blobs (end-2)


async def test_get_blob_is_200_with_the_bytes(client: httpx.AsyncClient) -> None:
    """end-2: "A GET request to an existing blob URL MUST provide the expected blob", with a
    Docker-Content-Digest that "MUST be a digest matching that of the response body"."""
    data = random_bytes(3000)
    digest = await push_blob(client, "app", data)
    response = await client.get(f"/v2/app/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["docker-content-digest"] == digest
    assert digest_of(response.content) == digest
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["accept-ranges"] == "bytes"


async def test_head_blob_is_200_with_length_and_no_body(client: httpx.AsyncClient) -> None:
    data = random_bytes(3000)
    digest = await push_blob(client, "app", data)
    response = await client.head(f"/v2/app/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["docker-content-digest"] == digest


async def test_empty_blob_is_pullable(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "app", b"")
    response = await client.get(f"/v2/app/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "0"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_unknown_blob_is_404_blob_unknown(client: httpx.AsyncClient, method: str) -> None:
    """end-2: "If the blob is not found in the repository, the response code MUST be 404";
    code-1 BLOB_UNKNOWN."""
    await push_blob(client, "app", random_bytes())
    response = await client.request(method, f"/v2/app/blobs/{unknown_digest()}")
    assert response.status_code == 404
    if method == "GET":
        assert_error(response, 404, "BLOB_UNKNOWN")


async def test_blob_in_unknown_repository_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v2/nobody/blobs/{unknown_digest()}")
    assert_error(response, 404, "BLOB_UNKNOWN")


async def test_blob_of_repo_a_is_not_readable_in_repo_b(client: httpx.AsyncClient) -> None:
    """Blobs are stored once, but a repository reads only what was pushed or mounted there."""
    digest = await push_blob(client, "repo-a", random_bytes())
    await push_blob(client, "repo-b", random_bytes())
    for method in ("GET", "HEAD"):
        response = await client.request(method, f"/v2/repo-b/blobs/{digest}")
        assert response.status_code == 404
    response = await client.get(f"/v2/repo-b/blobs/{digest}")
    assert_error(response, 404, "BLOB_UNKNOWN")


async def test_blob_of_repo_a_is_readable_in_repo_b_once_mounted(
    client: httpx.AsyncClient,
) -> None:
    data = random_bytes()
    digest = await push_blob(client, "repo-a", data)
    response = await client.post(
        "/v2/repo-b/blobs/uploads/", params={"mount": digest, "from": "repo-a"}
    )
    assert response.status_code == 201
    response = await client.get(f"/v2/repo-b/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data


async def test_manifest_is_readable_as_a_blob(client: httpx.AsyncClient) -> None:
    """distribution links a manifest's digest in the repository, so blob GET serves it too."""
    pushed = await push_image(client, "app", "v1")
    response = await client.get(f"/v2/app/blobs/{pushed.digest}")
    assert response.status_code == 200
    assert response.content == pushed.body


async def test_malformed_blob_digest_is_400_digest_invalid(client: httpx.AsyncClient) -> None:
    """distribution: a blob URL whose digest does not parse is DIGEST_INVALID (code-4)."""
    response = await client.get("/v2/app/blobs/sha256:abc")
    assert_error(response, 400, "DIGEST_INVALID")


# Range (spec: "A registry SHOULD support the Range request header in accordance with RFC 9110")

SIZE = 1000


@pytest.fixture
async def blob(client: httpx.AsyncClient) -> tuple[str, bytes]:
    data = random_bytes(SIZE)
    return await push_blob(client, "app", data), data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=500-", 500, SIZE - 1),
        ("bytes=900-5000", 900, SIZE - 1),
        ("bytes=-100", SIZE - 100, SIZE - 1),
        ("bytes=-5000", 0, SIZE - 1),
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
    ],
    ids=[
        "first-byte",
        "head",
        "middle",
        "open-ended",
        "end-past-size",
        "suffix",
        "suffix-past-size",
        "last-byte",
    ],
)
async def test_range_is_206_with_content_range(
    client: httpx.AsyncClient, blob: tuple[str, bytes], header: str, start: int, end: int
) -> None:
    digest, data = blob
    response = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == data[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["docker-content-digest"] == digest


async def test_head_with_range_is_206_without_body(
    client: httpx.AsyncClient, blob: tuple[str, bytes]
) -> None:
    digest, _ = blob
    response = await client.head(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == b""
    assert response.headers["content-range"] == f"bytes 10-19/{SIZE}"
    assert response.headers["content-length"] == "10"


@pytest.mark.parametrize(
    "header",
    [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0", "bytes=20-10"],
    ids=["start-at-size", "past-the-end", "empty-suffix", "end-before-start"],
)
async def test_unsatisfiable_range_is_416_with_size(
    client: httpx.AsyncClient, blob: tuple[str, bytes], header: str
) -> None:
    """RFC 9110 15.5.17: a 416 "SHOULD" carry `Content-Range: bytes */<complete-length>`."""
    digest, _ = blob
    response = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"


async def test_any_range_of_an_empty_blob_is_416(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "app", b"")
    response = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=0-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize(
    "header",
    ["bytes=0-1,5-6", "items=0-10", "bytes=abc", "bytes=-"],
    ids=["several-ranges", "other-unit", "garbage", "no-numbers"],
)
async def test_range_the_registry_does_not_serve_is_ignored(
    client: httpx.AsyncClient, blob: tuple[str, bytes], header: str
) -> None:
    """RFC 9110 14.2: a server "MAY ignore the Range header field"; the whole blob, 200."""
    digest, data = blob
    response = await client.get(f"/v2/app/blobs/{digest}", headers={"Range": header})
    assert response.status_code == 200
    assert response.content == data


async def test_ranges_resume_a_pull(client: httpx.AsyncClient, blob: tuple[str, bytes]) -> None:
    """The spec's "Resumable Pull" use case: the pieces add up to the blob."""
    digest, data = blob
    pieces = []
    for start in range(0, SIZE, 300):
        response = await client.get(
            f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={start}-{start + 299}"}
        )
        assert response.status_code == 206
        pieces.append(response.content)
    assert b"".join(pieces) == data
