"""The Docker engine against a real `portside serve`: push, pull by tag and by digest, search, login
with Basic auth and with the token service, and a multi-layer image pushed by skopeo.

The engine is `dockerd` from Debian's docker.io, started by the tests (see docker.py): one for the
whole module, with a docker CLI config of each test's own. Images come from `docker import` of a
tiny root file system with random content, so each test's layers are new to the registry.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from portside.auth.htpasswd import Scheme, add_user

from .clients import OciClient, Skopeo, digest_of, skopeo_for
from .conftest import EngineFactory, ServerFactory
from .docker import Docker
from .images import Layout
from .server import PortsideServer

pytestmark = pytest.mark.e2e

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = f"{DOCKER_MANIFEST}, application/vnd.oci.image.manifest.v1+json"


def unique_files() -> dict[str, bytes]:
    return {"/hello.txt": os.urandom(32).hex().encode(), "/etc/e2e/id": os.urandom(16)}


def manifest_of(url: str, repository: str, reference: str, **client: Any) -> httpx.Response:
    response = httpx.get(
        f"{url}/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT}, **client
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response


# The engine ----------------------------------------------------------------------------------


def test_an_engine_of_its_own_takes_extra_daemon_json_keys(
    tmp_path: Path, docker_engine_factory: EngineFactory
) -> None:
    """What a test needs for a mirror or a registry on another address; 127.0.0.0/8 is
    insecure without saying so."""
    mirror = "http://127.0.0.1:9/"
    engine = docker_engine_factory(
        {"registry-mirrors": [mirror], "insecure-registries": ["registry.e2e.invalid:5000"]}
    )
    docker = engine.client(tmp_path / "docker")

    registry = json.loads(docker("info", "--format", "{{json .RegistryConfig}}").stdout)

    assert registry["Mirrors"] == [mirror]
    assert "registry.e2e.invalid:5000" in registry["IndexConfigs"]
    assert registry["IndexConfigs"]["registry.e2e.invalid:5000"]["Secure"] is False
    assert "127.0.0.0/8" in registry["InsecureRegistryCIDRs"]
    assert engine.startup_seconds is not None
    assert engine.startup_seconds < 30


# An open registry -------------------------------------------------------------------------------


def test_docker_pushes_then_pulls_by_tag_and_by_digest_and_searches(
    portside: PortsideServer, docker: Docker, oci: OciClient
) -> None:
    host = portside.host
    reference = f"{host}/e2e/app:v1"
    files = unique_files()
    image_id = docker.import_image(reference, files)

    digest = docker.push(reference)

    # What Portside stores is what docker pushed: the manifest hashes to the reported digest,
    # its config is the image (the id is the config's digest), with docker's one layer.
    manifest = manifest_of(portside.url, "e2e/app", "v1")
    assert manifest.headers["Docker-Content-Digest"] == digest
    assert digest_of(manifest.content) == digest
    assert manifest.headers["Content-Type"] == DOCKER_MANIFEST
    document = manifest.json()
    assert document["config"]["digest"] == image_id
    config = oci.get_blob("e2e/app", image_id)
    assert digest_of(config.content) == image_id
    diff_ids = json.loads(config.content)["rootfs"]["diff_ids"]
    assert diff_ids == docker.inspect(reference)["RootFS"]["Layers"]
    for layer in document["layers"]:
        blob = oci.get_blob("e2e/app", layer["digest"])
        assert blob.status_code == 200
        assert digest_of(blob.content) == layer["digest"]
        assert len(blob.content) == layer["size"]
    assert oci.tags("e2e/app") == ["v1"]

    docker("rmi", reference)
    assert not docker.has_image(image_id)
    assert docker.pull(reference) == digest
    pulled = docker.inspect(reference)
    assert pulled["Id"] == image_id
    assert pulled["RepoDigests"] == [f"{host}/e2e/app@{digest}"]
    assert docker.saved_files(reference) == files

    docker("rmi", reference)
    by_digest = f"{host}/e2e/app@{digest}"
    assert docker.pull(by_digest) == digest
    assert docker.inspect(by_digest)["Id"] == image_id
    assert docker.saved_files(by_digest) == files

    # `docker search HOST/TERM` asks GET /v1/search?q=TERM of that registry (after /v1/_ping),
    # and shows the names as the registry gives them: without the host.
    found = docker("search", "--no-trunc", "--format", "{{.Name}}", f"{host}/app").stdout
    assert found.split() == ["e2e/app"]
    missing = docker("search", "--format", "{{.Name}}", f"{host}/no-such-thing").stdout
    assert missing.strip() == ""


# Basic auth and the token service ---------------------------------------------------------------

USERS = {"pusher": "pusher-Secret-1", "reader": "reader-Secret-2"}
ACCESS = {
    "rules": [
        {"repositories": ["team/*"], "users": ["pusher"], "actions": ["*"]},
        {"repositories": ["team/*"], "users": ["reader"], "actions": ["pull"]},
    ],
}


@pytest.fixture(params=["basic", "token"])
def secured(
    request: pytest.FixtureRequest, tmp_path: Path, portside_factory: ServerFactory
) -> PortsideServer:
    """A registry with Basic auth from htpasswd, or with the built-in token service."""
    htpasswd = tmp_path / "htpasswd"
    for user, secret in USERS.items():
        add_user(htpasswd, user, secret, scheme=Scheme.BCRYPT, rounds=4)
    auth: dict[str, Any] = {"htpasswd": {"path": str(htpasswd)}, "access": ACCESS}
    if request.param == "token":
        auth["token"] = {"service": "portside-e2e"}
    return portside_factory(auth=auth)


def assert_no_secret_in_log(server: PortsideServer) -> None:
    log = server.log_text()
    for secret in USERS.values():
        assert secret not in log
    assert "Basic " not in log
    assert "Bearer " not in log


def test_docker_logs_in_pushes_pulls_and_logs_out(secured: PortsideServer, docker: Docker) -> None:
    host = secured.host
    reference = f"{host}/team/app:v1"
    files = unique_files()
    image_id = docker.import_image(reference, files)
    refused = docker("push", reference, check=False)
    assert refused.returncode != 0
    assert "no basic auth credentials" in refused.stderr or "denied" in refused.stderr.lower()

    login = docker.login(host, "pusher", USERS["pusher"])
    assert login.returncode == 0, login.stderr
    assert "Login Succeeded" in login.stdout
    stored = docker.auths()[host]
    if secured.settings["auth"].get("token"):
        # The token service hands out a refresh token: docker keeps it instead of the password.
        assert stored["identitytoken"]
        assert USERS["pusher"] not in base64.b64decode(stored["auth"]).decode()
    else:
        assert base64.b64decode(stored["auth"]).decode() == f"pusher:{USERS['pusher']}"
    digest = docker.push(reference)
    docker("rmi", reference)
    assert docker.pull(reference) == digest
    assert docker.inspect(reference)["Id"] == image_id
    assert docker.saved_files(reference) == files
    # Logged in, docker search sends the credentials (Basic) or gets a token for it.
    found = docker("search", "--format", "{{.Name}}", f"{host}/app").stdout
    assert found.split() == ["team/app"]

    docker.logout(host)
    assert host not in docker.auths()
    docker("rmi", reference)
    anonymous = docker("pull", reference, check=False)
    assert anonymous.returncode != 0
    # Basic: docker says so itself on the challenge; token: the token service refuses the scope.
    assert any(
        words in anonymous.stderr.lower()
        for words in ("no basic auth credentials", "unauthorized", "denied")
    ), anonymous.stderr
    assert_no_secret_in_log(secured)


def test_docker_login_with_a_wrong_password_fails_and_a_reader_cannot_push(
    secured: PortsideServer, docker: Docker
) -> None:
    host = secured.host
    refused = docker.login(host, "pusher", "wrong-password")
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "incorrect" in refused.stderr.lower()
    assert host not in docker.auths()
    refused = docker.login(host, "nobody", "whatever")
    assert refused.returncode != 0

    reference = f"{host}/team/app:v1"
    image_id = docker.import_image(reference, unique_files())
    assert docker.login(host, "pusher", USERS["pusher"]).returncode == 0
    digest = docker.push(reference)
    docker("rmi", reference)

    assert docker.login(host, "reader", USERS["reader"]).returncode == 0
    assert docker.pull(reference) == digest
    assert docker.inspect(reference)["Id"] == image_id
    docker("tag", reference, f"{host}/team/app:v2")
    denied = docker("push", f"{host}/team/app:v2", check=False)

    assert denied.returncode != 0
    assert "denied" in denied.stderr.lower() or "unauthorized" in denied.stderr.lower()
    tags = httpx.get(f"{secured.url}/v2/team/app/tags/list", auth=("reader", USERS["reader"]))
    assert tags.json()["tags"] == ["v1"]
    assert_no_secret_in_log(secured)


# Several layers ---------------------------------------------------------------------------------


@pytest.fixture
def skopeo(tmp_path: Path, portside: PortsideServer) -> Skopeo:
    return skopeo_for(tmp_path / "skopeo", portside.host)


@pytest.mark.parametrize("gzip_first", [False, True], ids=["tar", "gzip-and-tar"])
def test_docker_pulls_a_multi_layer_image_with_the_layers_skopeo_pushed(
    tmp_path: Path,
    portside: PortsideServer,
    skopeo: Skopeo,
    docker: Docker,
    oci: OciClient,
    gzip_first: bool,
) -> None:
    """An OCI image of three layers (built by images.py, copied by skopeo with its digests kept):
    docker pulls it by tag and by digest; its image id is the config's digest, its layers are the
    config's diff_ids, and what `docker save` writes of each layer hashes to them."""
    source = Layout(tmp_path / "source")
    image = source.add_image([1024, 3000, 70_000], tag="v1", gzip_first=gzip_first)
    skopeo.copy(source.ref("v1"), f"docker://{portside.host}/e2e/multi:v1")
    config = json.loads(source.read_blob(image.config.digest))
    reference = f"{portside.host}/e2e/multi:v1"

    pulled = docker("pull", reference).stdout
    assert f"Digest: {image.manifest.digest}" in pulled
    # docker names each layer by the first 12 hex digits of its blob digest.
    for layer in image.layers:
        assert f"{layer.digest.removeprefix('sha256:')[:12]}: Pull complete" in pulled, pulled
    inspected = docker.inspect(reference)
    assert inspected["Id"] == image.config.digest
    assert inspected["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    assert inspected["RepoDigests"] == [f"{portside.host}/e2e/multi@{image.manifest.digest}"]
    assert docker.saved_layer_digests(reference) == config["rootfs"]["diff_ids"]

    # Pushed back by docker to another repository of the same registry: docker remembers where
    # the layers came from and mounts them (POST ?mount=&from=e2e/multi answers 201), so the new
    # manifest names the very same blobs. (docker labels every layer ...tar.gzip, the plain tar
    # ones too: docker's doing, the registry stores the manifest as given.)
    copy = f"{portside.host}/e2e/multi-copy:v1"
    docker("tag", reference, copy)
    pushed = docker("push", copy).stdout
    # Here docker names each layer by its diff_id.
    for diff_id in config["rootfs"]["diff_ids"]:
        assert f"{diff_id.removeprefix('sha256:')[:12]}: Mounted from e2e/multi" in pushed, pushed
    manifest = manifest_of(portside.url, "e2e/multi-copy", "v1")
    assert f"digest: {digest_of(manifest.content)} " in pushed
    document = manifest.json()
    assert document["config"]["digest"] == image.config.digest
    assert [(layer["digest"], layer["size"]) for layer in document["layers"]] == [
        (layer.digest, layer.size) for layer in image.layers
    ]
    for layer in image.layers:
        blob = oci.get_blob("e2e/multi-copy", layer.digest)
        assert blob.content == source.read_blob(layer.digest)
