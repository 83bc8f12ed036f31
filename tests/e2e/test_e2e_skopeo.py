"""skopeo against a real `portside serve`: images built as OCI layouts, copied in and out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from .clients import Skopeo, digest_of
from .images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    Layout,
    big_layer_image,
    file_sha256,
    multi_arch_index,
    multi_layer_image,
    tagged_digest,
    verify_layout_blobs,
)
from .server import PortsideServer

pytestmark = pytest.mark.e2e


def assert_layout_holds(pulled: Path, source: Layout, image: Image) -> None:
    """Every blob of image (manifest, config, layers) is in the pulled layout, byte for byte."""
    on_disk = verify_layout_blobs(pulled)
    for blob in [image.manifest, *image.blobs]:
        assert on_disk.get(blob.digest) == blob.size, f"{blob.digest} missing or resized"
        pulled_path = pulled / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
        assert pulled_path.read_bytes() == source.read_blob(blob.digest)


def test_skopeo_copies_a_multi_layer_image_in_and_out_with_every_digest_intact(
    tmp_path: Path, portside: PortsideServer, skopeo: Skopeo
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1")
    (image,) = source.images.values()
    assert len(image.layers) >= 3
    remote = f"docker://{portside.host}/e2e/multi-layer:v1"

    skopeo.copy(source.ref("v1"), remote)

    raw = skopeo.inspect_raw(remote)
    assert raw == source.read_blob(image.manifest.digest)
    assert digest_of(raw) == image.manifest.digest
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", remote).stdout)
    assert inspected["Digest"] == image.manifest.digest
    assert inspected["Layers"] == [layer.digest for layer in image.layers]
    # The manifest's blobs, read straight from the registry.
    for blob in image.blobs:
        response = httpx.get(f"{portside.url}/v2/e2e/multi-layer/blobs/{blob.digest}")
        assert response.status_code == 200
        assert digest_of(response.content) == blob.digest

    pulled = tmp_path / "pulled"
    skopeo.copy(remote, f"oci:{pulled}:v1")

    assert tagged_digest(pulled, "v1") == image.manifest.digest
    assert_layout_holds(pulled, source, image)


def test_skopeo_copies_a_multi_arch_index_with_all_both_ways(
    tmp_path: Path, portside: PortsideServer, skopeo: Skopeo
) -> None:
    source = multi_arch_index(tmp_path / "source", tag="multi")
    index = source.tags["multi"]
    remote_repo = f"docker://{portside.host}/e2e/multi-arch"

    skopeo.copy(source.ref("multi"), f"{remote_repo}:multi", "--all")

    raw_index = skopeo.inspect_raw(f"{remote_repo}:multi")
    assert raw_index == source.read_blob(index.digest)
    children = json.loads(raw_index)["manifests"]
    assert {c["platform"]["architecture"] for c in children} == {"amd64", "arm64"}
    for child in children:
        assert skopeo.inspect_raw(f"{remote_repo}@{child['digest']}") == source.read_blob(
            child["digest"]
        )
    response = httpx.get(
        f"{portside.url}/v2/e2e/multi-arch/manifests/multi",
        headers={"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    assert response.headers["docker-content-digest"] == index.digest

    pulled = tmp_path / "pulled"
    skopeo.copy(f"{remote_repo}:multi", f"oci:{pulled}:multi", "--all")

    assert tagged_digest(pulled, "multi") == index.digest
    assert (pulled / "blobs" / "sha256" / index.digest[7:]).read_bytes() == source.read_blob(
        index.digest
    )
    assert len(source.images) == 2
    for image in source.images.values():
        assert_layout_holds(pulled, source, image)


@pytest.mark.slow
def test_skopeo_pushes_and_pulls_an_image_with_a_200_mib_layer_unchanged(
    tmp_path: Path, portside: PortsideServer, skopeo: Skopeo
) -> None:
    source = big_layer_image(tmp_path / "source", tag="big")
    (image,) = source.images.values()
    (layer,) = image.layers
    assert layer.size > 200 * 1024 * 1024
    remote = f"docker://{portside.host}/e2e/big:big"

    skopeo.copy(source.ref("big"), remote)

    head = httpx.head(f"{portside.url}/v2/e2e/big/blobs/{layer.digest}")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == layer.size

    pulled = tmp_path / "pulled"
    skopeo.copy(remote, f"oci:{pulled}:big")

    assert tagged_digest(pulled, "big") == image.manifest.digest
    pulled_layer = pulled / "blobs" / "sha256" / layer.digest[7:]
    assert pulled_layer.stat().st_size == layer.size
    assert "sha256:" + file_sha256(pulled_layer) == layer.digest
    assert (pulled / "blobs" / "sha256" / image.config.digest[7:]).read_bytes() == (
        source.read_blob(image.config.digest)
    )
    # 600 MiB in tmp_path, which pytest keeps for three runs: drop it once the test has passed.
    portside.stop()
    for folder in (source.path, pulled, portside.storage_path):
        shutil.rmtree(folder)


def test_skopeo_lists_tags_and_deleting_a_manifest_by_digest_removes_its_tags(
    tmp_path: Path, portside: PortsideServer, skopeo: Skopeo
) -> None:
    source = Layout(tmp_path / "source")
    images = [source.add_image([4096, 2048], tag=f"t{i}") for i in range(3)]
    source.tag("alias", images[0].manifest)
    repo = f"docker://{portside.host}/e2e/tags"
    for tag in ("t0", "t1", "t2", "alias"):
        skopeo.copy(source.ref(tag), f"{repo}:{tag}")

    assert sorted(skopeo.list_tags(repo)) == ["alias", "t0", "t1", "t2"]

    skopeo("delete", "--tls-verify=false", f"{repo}@{images[0].manifest.digest}")

    # spec: deleting a manifest by digest deletes it and every tag on it.
    assert sorted(skopeo.list_tags(repo)) == ["t1", "t2"]
    for reference in (f"{repo}:t0", f"{repo}:alias", f"{repo}@{images[0].manifest.digest}"):
        failed = skopeo(
            "copy", "--src-tls-verify=false", reference, f"oci:{tmp_path / 'gone'}:x", check=False
        )
        assert failed.returncode != 0
        assert "manifest unknown" in failed.stderr.lower(), failed.stderr
    # The other tags still pull.
    pulled = tmp_path / "pulled"
    skopeo.copy(f"{repo}:t1", f"oci:{pulled}:t1")
    assert tagged_digest(pulled, "t1") == images[1].manifest.digest


def test_skopeo_copy_into_a_second_repository_mounts_the_blobs_it_already_has(
    tmp_path: Path, portside: PortsideServer, skopeo: Skopeo
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1")
    (image,) = source.images.values()
    skopeo.copy(source.ref("v1"), f"docker://{portside.host}/e2e/mount-from:v1")
    before = len(portside.access_lines())

    skopeo.copy(source.ref("v1"), f"docker://{portside.host}/e2e/mount-to:v1")

    # skopeo remembers where it pushed each blob and asks to mount it (POST ?mount=&from=), which
    # the registry grants with 201 and no upload.
    requests = portside.access_lines()[before:]
    mounted = [
        line
        for line in requests
        if (line.method, line.path, line.status) == ("POST", "/v2/e2e/mount-to/blobs/uploads/", 201)
    ]
    patches = [line for line in requests if line.method == "PATCH"]
    assert len(mounted) >= len(image.layers), requests
    assert len(patches) <= len(image.blobs) - len(image.layers), patches
    for blob in image.blobs:
        response = httpx.get(f"{portside.url}/v2/e2e/mount-to/blobs/{blob.digest}")
        assert response.status_code == 200
        assert digest_of(response.content) == blob.digest
    pulled = tmp_path / "pulled"
    skopeo.copy(f"docker://{portside.host}/e2e/mount-to:v1", f"oci:{pulled}:v1")
    assert_layout_holds(pulled, source, image)
