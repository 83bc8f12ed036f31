"""Real registries to be an upstream: CNCF distribution (Debian's `docker-registry`, 2.8) open or
behind htpasswd, and a way to push test images to any registry with plain HTTP requests.

Fixtures (session-scoped: one process each per run; tests push to repositories of their own):

    distribution            an open distribution
    distribution_htpasswd   distribution with Basic auth: .username and .password work

Reuse them from another suite's conftest with `from upstream.registries import distribution`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from e2e.server import free_port
from portside.auth.htpasswd import add_user

DISTRIBUTION = shutil.which("docker-registry")
START_TIMEOUT = 30.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Distribution:
    """`docker-registry serve` on a free loopback port, its storage and log under root. With
    `username` and `password`, it asks for them (htpasswd with a bcrypt entry); with `storage`,
    a storage driver's section (`{"s3": {...}}`) takes the place of the folder under root."""

    def __init__(
        self,
        root: Path,
        username: str | None = None,
        password: str | None = None,
        storage: dict[str, object] | None = None,
    ):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.username = username
        self.password = password
        self.storage = storage or {"filesystem": {"rootdirectory": str(root / "storage")}}
        self.log_path = root / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {**self.storage, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.username is not None and self.password is not None:
            htpasswd = self.root / "htpasswd"
            add_user(htpasswd, self.username, self.password, rounds=4, replace=True)
            config["auth"] = {"htpasswd": {"realm": "upstream-test", "path": str(htpasswd)}}
        return config

    def start(self) -> None:
        assert DISTRIBUTION is not None
        config_path = self.root / "config.yml"
        config_path.write_text(yaml.safe_dump(self.config()))
        # distribution 2.8 panics at start when AWS_CA_BUNDLE is set (its S3 driver reads it).
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [DISTRIBUTION, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited:\n{self.log_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/v2/", timeout=2).status_code in (200, 401):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def auth(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return self.username, self.password


@contextlib.contextmanager
def running_distribution(
    root: Path,
    username: str | None = None,
    password: str | None = None,
    storage: dict[str, object] | None = None,
) -> Iterator[Distribution]:
    if DISTRIBUTION is None:
        pytest.skip("no docker-registry (Debian package docker-registry) on PATH")
    registry = Distribution(root, username, password, storage)
    try:
        registry.start()
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    with running_distribution(tmp_path_factory.mktemp("distribution")) as registry:
        yield registry


@pytest.fixture(scope="session")
def distribution_htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    root = tmp_path_factory.mktemp("distribution-htpasswd")
    with running_distribution(root, "puller", "Upstream-Secret-1") as registry:
        yield registry


# Pushing ----------------------------------------------------------------------------------------


def digest_of(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


@dataclass(frozen=True)
class PushedImage:
    repository: str
    tag: str
    manifest: bytes
    digest: str
    config: bytes
    layers: tuple[bytes, ...]

    @property
    def layer_digests(self) -> list[str]:
        return [digest_of(layer) for layer in self.layers]


def push_blob(client: httpx.Client, repository: str, content: bytes) -> str:
    """A monolithic upload: POST for a session, then PUT with the bytes and the digest."""
    digest = digest_of(content)
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = httpx.URL(started.headers["location"])
    finished = client.put(
        location.copy_merge_params({"digest": digest}),
        content=content,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert finished.status_code == 201, finished.text
    return digest


def push_image(
    client: httpx.Client, repository: str, tag: str, layers: tuple[bytes, ...] = ()
) -> PushedImage:
    """An OCI image of the given layers (one small random layer if none), tagged. `client` has
    the registry's base_url and whatever auth it needs."""
    layers = layers or (secrets.token_bytes(1024),)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer) for layer in layers]},
        }
    ).encode()
    for blob in (config, *layers):
        push_blob(client, repository, blob)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}
                for layer in layers
            ],
        }
    ).encode()
    answer = client.put(
        f"/v2/{repository}/manifests/{tag}",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert answer.status_code == 201, answer.text
    return PushedImage(repository, tag, manifest, digest_of(manifest), config, layers)


def push_artifact(
    client: httpx.Client, repository: str, subject: bytes, artifact_type: str
) -> bytes:
    """A signature- or SBOM-like artifact (an image manifest with artifactType, one small random
    layer) whose subject is the manifest `subject`, pushed by digest; its manifest."""
    empty, payload = b"{}", secrets.token_bytes(64)
    for blob in (empty, payload):
        push_blob(client, repository, blob)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest_of(empty),
                "size": len(empty),
            },
            "layers": [
                {"mediaType": artifact_type, "digest": digest_of(payload), "size": len(payload)}
            ],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": digest_of(subject),
                "size": len(subject),
            },
        }
    ).encode()
    answer = client.put(
        f"/v2/{repository}/manifests/{digest_of(manifest)}",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert answer.status_code == 201, answer.text
    return manifest
