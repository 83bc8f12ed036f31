"""Scale-out: two `portside serve` instances, A and B, with two workers each, sharing one S3 bucket
(tests/s3.py's server) and one PostgreSQL database (tests/postgres.py's), as a load balancer
would put them. B answers blob GETs with redirects to the bucket (`storage_redirect`), A sends
the bytes itself, so every pull via B also checks that clients follow the redirect.

Skipped, with the reason, when S3 or PostgreSQL cannot be had: the environment's (what scripts/test
exports) else a throwaway one started for the session. The two instances are started once for the
module and shared by its tests, each working in repositories of its own.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from postgres import schema
from s3 import S3Server

from .clients import OciClient, Podman, Skopeo, have, podman_for, skopeo_for
from .conftest import SERVERS
from .images import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Layout,
    canonical_json,
    multi_layer_image,
    tagged_digest,
    verify_layout_blobs,
)
from .server import PORTSIDE, PortsideServer

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
Pair = tuple[PortsideServer, PortsideServer]


@pytest.fixture(scope="module")
def shared_settings(s3_server: S3Server, postgres_url: str) -> Iterator[dict[str, Any]]:
    """What the instances share: a prefix of the bucket and a schema of the database."""
    with schema(postgres_url) as database_url:
        yield {
            **s3_server.portside_settings(),
            "database_url": database_url,
        }


@pytest.fixture(scope="module")
def pair(
    shared_settings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    """A and B, started at the same moment on the empty database: both run the migrations, one
    waits for the other's advisory lock."""
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable at {PORTSIDE}")
    root = tmp_path_factory.mktemp("scaleout")
    a = PortsideServer(root / "a", 2, shared_settings)
    b = PortsideServer(root / "b", 2, {**shared_settings, "storage_redirect": True})
    errors: list[BaseException] = []

    def start(server: PortsideServer) -> None:
        try:
            server.start()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(server,)) for server in (a, b)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        yield a, b
    finally:
        for server in (a, b):
            server.stop()


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request: pytest.FixtureRequest, pair: Pair) -> None:
    request.node.stash[SERVERS] = list(pair)


@pytest.fixture
def skopeo(tmp_path: Path, pair: Pair) -> Skopeo:
    return skopeo_for(tmp_path / "skopeo", pair[0].host)


@pytest.fixture
def podman(tmp_path: Path, pair: Pair) -> Iterator[Podman]:
    with podman_for(tmp_path / "podman", pair[0].host) as client:
        yield client


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, follow_redirects=True) as client:
        yield client


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll: a request's access-log line can lag its response."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def redirected_blob_gets(server: PortsideServer, repository: str) -> int:
    return sum(
        1
        for line in server.access_lines()
        if line.method == "GET"
        and line.path.startswith(f"/v2/{repository}/blobs/sha256:")
        and line.status == 307
    )


def image_manifest(oci: OciClient, repository: str) -> tuple[bytes, list[str]]:
    """Push a config and a layer of random bytes; an OCI manifest over them, and their digests."""
    config = canonical_json({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()})
    layer = os.urandom(64 * 1024)
    blobs = [oci.push_blob(repository, config), oci.push_blob(repository, layer)]
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": blobs[0], "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": blobs[1], "size": len(layer)}],
        }
    )
    return manifest, blobs


def assert_pulled(pulled: Path, source: Layout, tag: str) -> None:
    assert tagged_digest(pulled, tag) == source.tags[tag].digest
    on_disk = verify_layout_blobs(pulled)
    for image in source.images.values():
        for blob in [image.manifest, *image.blobs]:
            assert on_disk.get(blob.digest) == blob.size, f"{blob.digest} missing or resized"


def test_serve_on_s3_makes_no_folder_of_the_key_prefix(pair: Pair) -> None:
    """With storage: s3, storage_path is a key prefix in the bucket, not a folder to create
    (relative here, so it would appear in the server's working directory)."""
    for server in pair:
        prefix = Path(server.settings["storage_path"])
        assert not prefix.is_absolute()
        assert not (server.root / prefix.parts[0]).exists()


def test_skopeo_pushes_via_one_instance_and_pulls_via_the_other(
    tmp_path: Path, pair: Pair, skopeo: Skopeo
) -> None:
    a, b = pair
    for number, (push, pull) in enumerate([(a, b), (b, a)]):
        repository = f"scale/skopeo-{number}"
        source = multi_layer_image(tmp_path / f"source-{number}", tag="v1")
        skopeo.copy(source.ref("v1"), f"docker://{push.host}/{repository}:v1")
        pulled = tmp_path / f"pulled-{number}"
        skopeo.copy(f"docker://{pull.host}/{repository}:v1", f"oci:{pulled}:v1")
        assert_pulled(pulled, source, "v1")
    # Pulled via B, the layers came from the bucket: B answered their GETs with redirects.
    assert wait_for(lambda: redirected_blob_gets(b, "scale/skopeo-0") >= 4)
    assert redirected_blob_gets(a, "scale/skopeo-1") == 0


def test_podman_pushes_via_one_instance_and_pulls_via_the_other(
    tmp_path: Path, pair: Pair, podman: Podman
) -> None:
    a, b = pair
    for number, (push, pull) in enumerate([(a, b), (b, a)]):
        repository = f"scale/podman-{number}"
        source = multi_layer_image(tmp_path / f"source-{number}", tag="v1")
        (image,) = source.images.values()
        image_id = podman.load(source.ref("v1"), f"{push.host}/{repository}:v1")
        podman("push", "--tls-verify=false", f"{push.host}/{repository}:v1")
        podman("rmi", "--all", "--force")
        podman("pull", "--tls-verify=false", f"{pull.host}/{repository}:v1")
        (listed,) = podman.images()
        assert listed["Id"] == image_id == image.config.digest.removeprefix("sha256:")
        podman("rmi", "--all", "--force")
    assert wait_for(lambda: redirected_blob_gets(b, "scale/podman-0") >= 1)


def test_an_upload_whose_requests_reach_both_instances_completes(
    pair: Pair, http: httpx.Client
) -> None:
    """POST on A, PATCH on B, PATCH on A, PUT with the last chunk on B: the session lives in
    PostgreSQL and the bytes in the bucket, so no instance needs to have seen the others."""
    a, b = pair
    data = os.urandom(13 * MiB)  # past S3's 8 MiB part: the second PATCH resumes a multipart upload
    digest = digest_of(data)
    chunks = [(0, 5 * MiB), (5 * MiB, 11 * MiB), (11 * MiB, len(data))]
    started = http.post(f"{a.url}/v2/scale/chunked/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["location"]

    def on(server: PortsideServer, path: str) -> str:
        return path if path.startswith("http") else f"{server.url}{path}"

    for server, (start, end) in zip([b, a], chunks[:2], strict=True):
        response = http.patch(
            on(server, location),
            content=data[start:end],
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{end - 1}",
            },
        )
        assert response.status_code == 202, response.text
        assert response.headers["range"] == f"0-{end - 1}"
        location = response.headers["location"]
    start, end = chunks[2]
    finished = http.put(
        on(b, location),
        params={"digest": digest},
        content=data[start:end],
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"{start}-{end - 1}"},
    )
    assert finished.status_code == 201, finished.text
    assert finished.headers["docker-content-digest"] == digest

    for server in (a, b):  # B through its redirect to the bucket
        pulled = http.get(f"{server.url}/v2/scale/chunked/blobs/{digest}")
        assert pulled.status_code == 200
        assert digest_of(pulled.content) == digest
        head = http.head(f"{server.url}/v2/scale/chunked/blobs/{digest}")
        assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))


def test_a_tag_pushed_on_one_instance_is_seen_on_the_other_at_once(
    pair: Pair, http: httpx.Client
) -> None:
    a, b = pair
    for number, (push, read) in enumerate([(a, b), (b, a)]):
        manifest, _ = image_manifest(OciClient(http, push.url), "scale/tags")
        digest = OciClient(http, push.url).push_manifest(
            "scale/tags", "latest", manifest, OCI_MANIFEST
        )
        # No wait, no retry: the next request, on the other instance, sees the new tag.
        response = http.get(
            f"{read.url}/v2/scale/tags/manifests/latest", headers={"Accept": OCI_MANIFEST}
        )
        assert response.status_code == 200, number
        assert response.headers["docker-content-digest"] == digest
        assert response.content == manifest
        assert "latest" in OciClient(http, read.url).tags("scale/tags")


def test_a_delete_on_one_instance_is_seen_on_the_other(pair: Pair, http: httpx.Client) -> None:
    a, b = pair
    oci_a = OciClient(http, a.url)
    manifest, blobs = image_manifest(oci_a, "scale/delete")
    digest = oci_a.push_manifest("scale/delete", "v1", manifest, OCI_MANIFEST)
    assert http.get(f"{a.url}/v2/scale/delete/manifests/{digest}").status_code == 200

    deleted = http.delete(f"{b.url}/v2/scale/delete/manifests/{digest}")
    assert deleted.status_code == 202, deleted.text
    assert http.get(f"{a.url}/v2/scale/delete/manifests/{digest}").status_code == 404
    assert http.get(f"{a.url}/v2/scale/delete/manifests/v1").status_code == 404

    deleted = http.delete(f"{b.url}/v2/scale/delete/blobs/{blobs[1]}")
    assert deleted.status_code == 202, deleted.text
    for server in (a, b):
        assert http.get(f"{server.url}/v2/scale/delete/blobs/{blobs[1]}").status_code == 404
    assert http.get(f"{a.url}/v2/scale/delete/blobs/{blobs[0]}").status_code == 200


def test_concurrent_pushes_of_one_image_to_both_instances_succeed(
    tmp_path: Path, pair: Pair, http: httpx.Client
) -> None:
    """The same blobs and manifest, pushed at the same moment through A and through B, with two
    skopeo processes and with racing monolithic uploads of one blob: every push succeeds."""
    if not have("skopeo"):
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    source = multi_layer_image(tmp_path / "source", tag="v1")
    clients = [Skopeo(tmp_path / f"skopeo-{i}", server.host) for i, server in enumerate(pair)]
    errors: list[BaseException] = []

    def push(client: Skopeo, server: PortsideServer) -> None:
        try:
            client.copy(source.ref("v1"), f"docker://{server.host}/scale/race:v1")
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=push, args=(client, server))
        for client, server in zip(clients, pair, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for number, server in enumerate(pair):
        pulled = tmp_path / f"pulled-{number}"
        clients[0].copy(f"docker://{server.host}/scale/race:v1", f"oci:{pulled}:v1")
        assert_pulled(pulled, source, "v1")

    blob = os.urandom(3 * MiB)
    results: list[str | BaseException] = []

    def push_blob(server: PortsideServer) -> None:
        try:
            with httpx.Client(timeout=60) as own:
                results.append(OciClient(own, server.url).push_blob("scale/race-blob", blob))
        except BaseException as error:
            results.append(error)

    racers = [threading.Thread(target=push_blob, args=(pair[i % 2],)) for i in range(6)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()
    assert results == [digest_of(blob)] * 6
    for server in pair:
        pulled_blob = http.get(f"{server.url}/v2/scale/race-blob/blobs/{digest_of(blob)}")
        assert (pulled_blob.status_code, pulled_blob.content == blob) == (200, True)
