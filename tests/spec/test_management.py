"""Content management: deleting manifests, tags (end-9) and blobs (end-10), or refusing to."""

from __future__ import annotations

import httpx
import pytest
from helpers import (
    ClientFactory,
    assert_error,
    push_blob,
    push_image,
    push_index,
    random_bytes,
    unknown_digest,
)


async def test_delete_manifest_by_digest_is_202_and_takes_its_tags(
    client: httpx.AsyncClient,
) -> None:
    """end-9: "Upon success, the registry MUST respond with a 202 Accepted code"; "Once deleted,
    a GET to /v2/<name>/manifests/<digest> and any tag pointing to that digest will return a
    404"."""
    pushed = await push_image(client, "app", "v1")
    await client.put(
        "/v2/app/manifests/v2", content=pushed.body, headers={"Content-Type": pushed.media_type}
    )
    keep = await push_image(client, "app", "keep")
    response = await client.delete(f"/v2/app/manifests/{pushed.digest}")
    assert response.status_code == 202
    for reference in (pushed.digest, "v1", "v2"):
        response = await client.get(f"/v2/app/manifests/{reference}")
        assert_error(response, 404, "MANIFEST_UNKNOWN")
        assert (await client.head(f"/v2/app/manifests/{reference}")).status_code == 404
    assert (await client.get("/v2/app/tags/list")).json()["tags"] == ["keep"]
    assert (await client.get(f"/v2/app/manifests/{keep.digest}")).status_code == 200
    # the layers stay readable: only the manifest went
    for digest, data in pushed.blobs.items():
        assert (await client.get(f"/v2/app/blobs/{digest}")).content == data


async def test_delete_manifest_twice_is_404(client: httpx.AsyncClient) -> None:
    pushed = await push_image(client, "app", "v1")
    assert (await client.delete(f"/v2/app/manifests/{pushed.digest}")).status_code == 202
    response = await client.delete(f"/v2/app/manifests/{pushed.digest}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_deleted_manifest_can_be_pushed_again(client: httpx.AsyncClient) -> None:
    pushed = await push_image(client, "app", "v1")
    assert (await client.delete(f"/v2/app/manifests/{pushed.digest}")).status_code == 202
    response = await client.put(
        "/v2/app/manifests/v1", content=pushed.body, headers={"Content-Type": pushed.media_type}
    )
    assert response.status_code == 201
    assert (await client.get("/v2/app/manifests/v1")).content == pushed.body


async def test_delete_by_tag_is_202_and_takes_only_the_tag(client: httpx.AsyncClient) -> None:
    """end-9: deleting a tag answers 202; "Once deleted, a GET to /v2/<name>/manifests/<tag> will
    return a 404"; the manifest and its other tags stay."""
    pushed = await push_image(client, "app", "v1")
    await client.put(
        "/v2/app/manifests/v2", content=pushed.body, headers={"Content-Type": pushed.media_type}
    )
    response = await client.delete("/v2/app/manifests/v1")
    assert response.status_code == 202
    assert_error(await client.get("/v2/app/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert (await client.get("/v2/app/manifests/v2")).status_code == 200
    assert (await client.get(f"/v2/app/manifests/{pushed.digest}")).status_code == 200
    assert (await client.get("/v2/app/tags/list")).json()["tags"] == ["v2"]


async def test_delete_of_child_manifest_leaves_the_index(client: httpx.AsyncClient) -> None:
    """Like distribution, deleting by digest does not cascade to or from indexes."""
    child = await push_image(client, "app", None)
    index = await push_index(client, "app", [child], "multi")
    assert (await client.delete(f"/v2/app/manifests/{child.digest}")).status_code == 202
    assert (await client.get("/v2/app/manifests/multi")).content == index.body


@pytest.mark.parametrize("reference", ["missing", "sha256:" + "0" * 64], ids=["tag", "digest"])
async def test_delete_unknown_manifest_is_404(client: httpx.AsyncClient, reference: str) -> None:
    await push_image(client, "app", "v1")
    response = await client.delete(f"/v2/app/manifests/{reference}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_delete_manifest_in_unknown_repository_is_404(client: httpx.AsyncClient) -> None:
    """end-9: "If the repository does not exist, the response MUST return 404 Not Found"."""
    response = await client.delete(f"/v2/nobody/manifests/{unknown_digest()}")
    assert response.status_code == 404
    response = await client.delete("/v2/nobody/manifests/latest")
    assert response.status_code == 404


async def test_delete_manifest_of_another_repository_is_404(client: httpx.AsyncClient) -> None:
    pushed = await push_image(client, "repo-a", "v1")
    await push_image(client, "repo-b", "v1")
    response = await client.delete(f"/v2/repo-b/manifests/{pushed.digest}")
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert (await client.get(f"/v2/repo-a/manifests/{pushed.digest}")).status_code == 200


async def test_delete_by_malformed_digest_is_400_digest_invalid(client: httpx.AsyncClient) -> None:
    """end-9 may fail with 400; code-4 DIGEST_INVALID names the problem."""
    response = await client.delete("/v2/app/manifests/sha256:abc")
    assert_error(response, 400, "DIGEST_INVALID")


async def test_delete_blob_is_202_then_404(client: httpx.AsyncClient) -> None:
    """end-10: "Upon success, the registry MUST respond with code 202 Accepted. If the blob is
    not found, a 404 Not Found code MUST be returned"."""
    digest = await push_blob(client, "app", random_bytes())
    response = await client.delete(f"/v2/app/blobs/{digest}")
    assert response.status_code == 202
    assert_error(await client.get(f"/v2/app/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert (await client.head(f"/v2/app/blobs/{digest}")).status_code == 404
    assert_error(await client.delete(f"/v2/app/blobs/{digest}"), 404, "BLOB_UNKNOWN")


async def test_delete_blob_in_one_repository_leaves_the_others(client: httpx.AsyncClient) -> None:
    data = random_bytes()
    digest = await push_blob(client, "repo-a", data)
    await push_blob(client, "repo-b", data)
    assert (await client.delete(f"/v2/repo-a/blobs/{digest}")).status_code == 202
    assert (await client.get(f"/v2/repo-b/blobs/{digest}")).content == data


async def test_deleted_blob_can_be_pushed_again(client: httpx.AsyncClient) -> None:
    data = random_bytes()
    digest = await push_blob(client, "app", data)
    assert (await client.delete(f"/v2/app/blobs/{digest}")).status_code == 202
    assert await push_blob(client, "app", data) == digest
    assert (await client.get(f"/v2/app/blobs/{digest}")).content == data


@pytest.mark.parametrize("name", ["app", "nobody"])
async def test_delete_unknown_blob_is_404_blob_unknown(
    client: httpx.AsyncClient, name: str
) -> None:
    await push_blob(client, "app", random_bytes())
    response = await client.delete(f"/v2/{name}/blobs/{unknown_digest()}")
    assert_error(response, 404, "BLOB_UNKNOWN")


async def test_delete_blob_by_malformed_digest_is_400(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v2/app/blobs/sha256:abc")
    assert_error(response, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("target", ["manifest-digest", "tag", "blob"])
async def test_deletes_disabled_are_405_unsupported(
    make_client: ClientFactory, target: str
) -> None:
    """end-9, end-10: "If ... deletion is disabled, the registry MUST respond with either a 400
    Bad Request or a 405 Method Not Allowed"; code-13 UNSUPPORTED. Nothing is deleted."""
    client = await make_client(delete_enabled=False)
    pushed = await push_image(client, "app", "v1")
    layer = next(iter(pushed.blobs))
    path = {
        "manifest-digest": f"/v2/app/manifests/{pushed.digest}",
        "tag": "/v2/app/manifests/v1",
        "blob": f"/v2/app/blobs/{layer}",
    }[target]
    response = await client.delete(path)
    assert_error(response, 405, "UNSUPPORTED")
    assert (await client.get(path)).status_code == 200
