"""`storage_redirect`: blob GETs answer 307 with a short-lived URL of the object store (end-2).

The Docker Registry HTTP API V2, which the OCI spec is based on, says of a layer GET: "This
endpoint MAY issue a 307 (302 for <HTTP 1.1) redirect to another service for downloading the
layer and clients SHOULD be prepared to handle redirects"; CNCF distribution does so with its S3
driver unless `redirect: disable`. A fake store that makes recognisable URLs checks what the
registry sends; the real S3 server (tests/s3.py) checks that the URL then serves the bytes,
ranges included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ClientFactory, assert_error, push_blob, push_image, random_bytes, unknown_digest

from portside.config.settings import Settings
from portside.server.app import STORAGE_DRIVERS
from portside.storage.filesystem import FilesystemBlobStore
from s3 import S3Server

pytestmark = pytest.mark.filesystem_only("its registries choose their own store and database")

OBJECTS = "http://objects.test"


class RedirectingStore(FilesystemBlobStore):
    """The filesystem driver, plus the redirect URLs of an object store."""

    def redirect_url(self, key: str, expires: int) -> str:  # type: ignore[override]
        super().redirect_url(key, expires)
        return f"{OBJECTS}/{key}?expires={expires}"


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Settings of an S3 registry whose driver is RedirectingStore."""
    monkeypatch.setitem(
        STORAGE_DRIVERS, "s3", lambda settings: RedirectingStore(Path(settings.storage_path))
    )
    return {"storage": "s3", "s3_bucket": "fake", "database_url": f"sqlite:///{tmp_path}/r.db"}


@pytest.fixture
async def redirecting(make_client: ClientFactory, fake_s3: dict[str, Any]) -> httpx.AsyncClient:
    return await make_client(**fake_s3, storage_redirect=True, storage_redirect_seconds=120)


def blob_url(digest: str) -> str:
    """Where blobs/<algorithm>/<2 hex>/<hex> of registry/keys.py is in the fake store."""
    algorithm, _, encoded = digest.partition(":")
    return f"{OBJECTS}/blobs/{algorithm}/{encoded[:2]}/{encoded}?expires=120"


async def test_get_blob_is_307_to_the_object_store(redirecting: httpx.AsyncClient) -> None:
    """end-2, redirected: the URL is the driver's, valid for storage_redirect_seconds, and the
    answer carries the digest but no bytes."""
    digest = await push_blob(redirecting, "app", random_bytes(3000))
    response = await redirecting.get(f"/v2/app/blobs/{digest}")
    assert response.status_code == 307
    assert response.headers["location"] == blob_url(digest)
    assert response.headers["docker-content-digest"] == digest
    assert response.content == b""


async def test_get_with_range_is_redirected_too(redirecting: httpx.AsyncClient) -> None:
    """The object store honours Range itself, so a ranged GET goes there as well."""
    digest = await push_blob(redirecting, "app", random_bytes(3000))
    response = await redirecting.get(f"/v2/app/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert response.status_code == 307
    assert response.headers["location"] == blob_url(digest)


async def test_head_blob_is_answered_here_with_its_headers(redirecting: httpx.AsyncClient) -> None:
    """end-2: HEAD answers 200 with Content-Length and Docker-Content-Digest, not a redirect:
    clients check blobs with HEAD before pushing, and a round trip to S3 would only slow them."""
    data = random_bytes(3000)
    digest = await push_blob(redirecting, "app", data)
    response = await redirecting.head(f"/v2/app/blobs/{digest}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["docker-content-digest"] == digest
    assert "location" not in response.headers


async def test_unlinked_blob_is_404_not_a_redirect(redirecting: httpx.AsyncClient) -> None:
    """The link is checked before any redirect: a URL of the store is never handed out for a
    blob the repository may not read (code-1 BLOB_UNKNOWN)."""
    digest = await push_blob(redirecting, "repo-a", random_bytes())
    await push_blob(redirecting, "repo-b", random_bytes())
    assert_error(await redirecting.get(f"/v2/repo-b/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(await redirecting.get(f"/v2/app/blobs/{unknown_digest()}"), 404, "BLOB_UNKNOWN")


async def test_manifests_are_served_not_redirected(redirecting: httpx.AsyncClient) -> None:
    """end-3: manifests come from the registry, which negotiates their media type."""
    pushed = await push_image(redirecting, "app", "v1")
    response = await redirecting.get(
        f"/v2/app/manifests/{pushed.digest}", headers={"Accept": pushed.media_type}
    )
    assert response.status_code == 200
    assert response.content == pushed.body


async def test_without_storage_redirect_the_bytes_are_sent(
    make_client: ClientFactory, fake_s3: dict[str, Any]
) -> None:
    client = await make_client(**fake_s3)
    data = random_bytes(3000)
    digest = await push_blob(client, "app", data)
    response = await client.get(f"/v2/app/blobs/{digest}")
    assert (response.status_code, response.content) == (200, data)


def test_storage_redirect_needs_s3(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="storage_redirect needs storage: s3"):
        Settings(storage_path=tmp_path, storage_redirect=True)


# The real object store


async def test_redirect_serves_the_blob_and_its_ranges_from_s3(
    make_client: ClientFactory, s3_server: S3Server, tmp_path: Path
) -> None:
    """What a client does with the 307: GET the Location without credentials and receive the
    blob, or the range it asked for."""
    client = await make_client(
        storage="s3",
        storage_path=s3_server.new_prefix(),
        storage_redirect=True,
        s3_bucket=s3_server.bucket,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=s3_server.region,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        database_url=f"sqlite:///{tmp_path}/registry.db",
    )
    data = random_bytes(100_000)
    digest = await push_blob(client, "app", data)
    redirected = await client.get(f"/v2/app/blobs/{digest}")
    assert redirected.status_code == 307
    location = redirected.headers["location"]
    assert location.startswith(s3_server.endpoint_url)
    async with httpx.AsyncClient() as direct:
        whole = await direct.get(location)
        assert (whole.status_code, whole.content) == (200, data)
        ranged = await direct.get(location, headers={"Range": "bytes=1000-1999"})
        assert (ranged.status_code, ranged.content) == (206, data[1000:2000])
    head = await client.head(f"/v2/app/blobs/{digest}")
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))
