"""podman against a real `portside serve`: push, pull, pull by digest, images, search.

podman keeps its storage (vfs), run state and temp files under tmp_path; push, pull, tag, images,
rmi and search need no container runtime."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from .clients import Podman
from .images import Layout, multi_layer_image
from .server import PortsideServer

pytestmark = pytest.mark.e2e

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DESCRIPTION = "org.opencontainers.image.description"


def test_podman_pushes_and_pulls_an_image_and_pulls_it_again_by_digest(
    tmp_path: Path, portside: PortsideServer, podman: Podman
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1")
    (image,) = source.images.values()
    name = f"{portside.host}/e2e/podman"
    image_id = podman.load(source.ref("v1"), f"{name}:v1")
    assert image_id == image.config.digest.removeprefix("sha256:")
    digest_file = tmp_path / "pushed-digest"

    podman("push", "--tls-verify=false", "--digestfile", str(digest_file), f"{name}:v1")

    pushed = digest_file.read_text().strip()
    manifest = httpx.get(
        f"{portside.url}/v2/e2e/podman/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.status_code == 200
    assert manifest.headers["docker-content-digest"] == pushed
    layers = json.loads(manifest.content)["layers"]
    assert len(layers) == len(image.layers)

    podman("rmi", "--all", "--force")
    assert podman.images() == []
    podman("pull", "--tls-verify=false", f"{name}:v1")

    (listed,) = podman.images()
    assert listed["Id"] == image_id
    assert f"{name}:v1" in listed["Names"]
    assert listed["Digest"] == pushed

    podman("rmi", "--all", "--force")
    podman("pull", "--tls-verify=false", f"{name}@{pushed}")

    (by_digest,) = podman.images()
    assert by_digest["Id"] == image_id
    assert f"{name}@{pushed}" in by_digest["RepoDigests"]


def test_podman_search_finds_pushed_repositories(
    tmp_path: Path, portside: PortsideServer, podman: Podman
) -> None:
    source = Layout(tmp_path / "source")
    source.add_image([2048], tag="v1")
    podman.load(source.ref("v1"), "localhost/e2e/search-source:v1")
    repositories = ["e2e/search-alpha", "e2e/search-beta", "other/gamma"]
    for repository in repositories:
        target = f"{portside.host}/{repository}:v1"
        podman("tag", "localhost/e2e/search-source:v1", target)
        podman("push", "--tls-verify=false", target)

    def search(term: str) -> set[str]:
        result = podman(
            "search", "--tls-verify=false", "--format", "{{.Name}}", f"{portside.host}/{term}"
        )
        return {line.strip() for line in result.stdout.splitlines() if line.strip()}

    host = portside.host
    assert search("search") == {f"{host}/e2e/search-alpha", f"{host}/e2e/search-beta"}
    assert search("gamma") == {f"{host}/other/gamma"}
    assert search("e2e/search-b") == {f"{host}/e2e/search-beta"}
    assert search("no-such-thing") == set()

    catalog = httpx.get(f"{portside.url}/v2/_catalog").json()["repositories"]
    assert set(repositories) <= set(catalog)


def test_podman_search_shows_the_description_of_a_pushed_image(
    tmp_path: Path, portside: PortsideServer, podman: Podman
) -> None:
    """The description is the image config's org.opencontainers.image.description label (what
    a Dockerfile LABEL writes); search finds a repository by it too."""
    source = Layout(tmp_path / "source")
    source.add_image([1024], tag="described", labels={DESCRIPTION: "Kite flying demo"})
    source.add_image([1024], tag="plain")
    for tag, repository in (("described", "e2e/described"), ("plain", "e2e/plain")):
        target = f"{portside.host}/{repository}:v1"
        podman.load(source.ref(tag), target)
        podman("push", "--tls-verify=false", target)

    def search(term: str) -> list[str]:
        result = podman(
            "search",
            "--tls-verify=false",
            "--format",
            "{{.Name}} {{.Description}}",
            f"{portside.host}/{term}",
        )
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    host = portside.host
    assert search("e2e/") == [f"{host}/e2e/described Kite flying demo", f"{host}/e2e/plain"]
    assert search("kite") == [f"{host}/e2e/described Kite flying demo"]


def test_podman_pushes_a_docker_schema_2_manifest_and_pulls_it_back(
    tmp_path: Path, portside: PortsideServer, podman: Podman
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1")
    name = f"{portside.host}/e2e/docker-format:v1"
    image_id = podman.load(source.ref("v1"), name)
    digest_file = tmp_path / "pushed-digest"

    podman("push", "--tls-verify=false", "--format", "v2s2", "--digestfile", str(digest_file), name)

    pushed = digest_file.read_text().strip()
    response = httpx.get(
        f"{portside.url}/v2/e2e/docker-format/manifests/v1",
        headers={"Accept": DOCKER_MANIFEST},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert response.headers["docker-content-digest"] == pushed
    assert json.loads(response.content)["mediaType"] == DOCKER_MANIFEST

    podman("rmi", "--all", "--force")
    podman("pull", "--tls-verify=false", name)

    (listed,) = podman.images()
    assert listed["Id"] == image_id
    assert listed["Digest"] == pushed
