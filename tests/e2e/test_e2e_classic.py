"""An operator coming from the classic docker-registry: its config_sample.yml, unchanged, with a
flavor of their own appended, named by DOCKER_REGISTRY_CONFIG and SETTINGS_FLAVOR only.

Besides those two, the server gets STORAGE_PATH (so that nothing goes to the sample's
/tmp/registry) and SQLALCHEMY_INDEX_DATABASE (the sample's /tmp/docker-registry.db would be
shared by every run on the machine), both variables the sample itself reads; `--listen` picks
a free port, since the sample has no `listen`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from portside.auth.htpasswd import add_user
from s3 import S3Server, wipe

from .clients import podman_for, skopeo_for
from .docker import Docker
from .images import multi_layer_image, tagged_digest
from .server import PORTSIDE, START_TIMEOUT, PortsideServer

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).parents[1] / "data" / "classic" / "config_sample.yml"
CUSTOM = "\ncustom:\n    <<: *local\n    loglevel: info\n"


class ClassicServer(PortsideServer):
    """`portside serve` configured by the environment alone."""

    def __init__(self, root: Path, config: Path, flavor: str, environ: dict[str, str]) -> None:
        super().__init__(root)
        self.config = config
        self.flavor = flavor
        self.environ = environ

    def start(self, timeout: float = START_TIMEOUT) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"},
            "DOCKER_REGISTRY_CONFIG": str(self.config),
            "SETTINGS_FLAVOR": self.flavor,
            **self.environ,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(PORTSIDE), "serve", "--listen", self.host],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )
        self.wait_ready(timeout)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(SAMPLE.read_text() + CUSTOM)
    return path


@pytest.fixture
def serve(tmp_path: Path, sample: Path) -> Iterator[object]:
    servers: list[ClassicServer] = []

    def start(flavor: str, **environ: str) -> ClassicServer:
        root = tmp_path / f"{flavor}-{len(servers)}"
        environ.setdefault("SQLALCHEMY_INDEX_DATABASE", f"sqlite:///{root / 'index.db'}")
        server = ClassicServer(root, sample, flavor, environ)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("flavor", ["local", "dev", "test", "custom"])
def test_each_local_flavor_serves_the_banner(tmp_path: Path, serve: object, flavor: str) -> None:
    environ = {} if flavor == "test" else {"STORAGE_PATH": str(tmp_path / "storage")}
    server = serve(flavor, **environ)  # type: ignore[operator]

    banner = httpx.get(f"{server.url}/", timeout=10)

    assert banner.status_code == 200
    assert banner.text == '"docker-registry server"'
    assert "config:" not in server.log_text()  # no warning: nothing in the sample is lost
    if flavor == "test":  # the sample's own storage_path, ./tmp/test, in the working folder
        assert (server.root / "tmp" / "test").is_dir()


def test_push_and_pull_with_the_custom_flavor(tmp_path: Path, serve: object) -> None:
    server = serve("custom", STORAGE_PATH=str(tmp_path / "storage"))  # type: ignore[operator]
    skopeo = skopeo_for(tmp_path / "skopeo", server.host)
    source = multi_layer_image(tmp_path / "source", tag="v1")
    (image,) = source.images.values()
    remote = f"docker://{server.host}/team/app:v1"

    skopeo.copy(source.ref("v1"), remote)
    skopeo.copy(remote, f"oci:{tmp_path / 'pulled'}:v1")

    assert tagged_digest(tmp_path / "pulled", "v1") == image.manifest.digest
    assert (tmp_path / "storage").is_dir()
    assert (server.root / "index.db").is_file()  # SQLALCHEMY_INDEX_DATABASE holds the metadata
    # `search_backend: _env:SEARCH_BACKEND` with nothing set: the classic empty answer.
    search = httpx.get(f"{server.url}/v1/search", params={"q": "app"}, timeout=10)
    assert search.json() == {"query": "app", "num_results": 0, "results": []}


def s3_environ(s3_server: S3Server, prefix: str) -> dict[str, str]:
    endpoint = httpx.URL(s3_server.endpoint_url)
    assert s3_server.access_key is not None
    assert s3_server.secret_key is not None
    return {
        "AWS_BUCKET": s3_server.bucket,
        "AWS_HOST": str(endpoint.host),
        "AWS_PORT": str(endpoint.port or 80),
        "AWS_SECURE": "false",
        "AWS_KEY": s3_server.access_key,
        "AWS_SECRET": s3_server.secret_key,
        "AWS_REGION": s3_server.region,
        "STORAGE_PATH": prefix,
    }


@pytest.mark.parametrize("flavor", ["s3", "ceph-s3", "prod"])
def test_config_check_passes_for_the_s3_flavors(
    sample: Path, s3_server: S3Server, flavor: str
) -> None:
    env = {
        **os.environ,
        **s3_environ(s3_server, s3_server.new_prefix()),
        "DOCKER_REGISTRY_CONFIG": str(sample),
        "SETTINGS_FLAVOR": flavor,
    }

    checked = subprocess.run(
        [str(PORTSIDE), "config", "check"], env=env, capture_output=True, text=True, check=False
    )

    assert checked.returncode == 0, checked.stderr
    assert "storage: s3" in checked.stdout
    assert f"s3_bucket: {s3_server.bucket}" in checked.stdout
    assert checked.stderr == ""


def test_push_and_pull_with_the_ceph_flavor(
    tmp_path: Path, serve: object, s3_server: S3Server
) -> None:
    prefix = s3_server.new_prefix()
    server = serve("ceph-s3", **s3_environ(s3_server, prefix))  # type: ignore[operator]
    skopeo = skopeo_for(tmp_path / "skopeo", server.host)
    source = multi_layer_image(tmp_path / "source", tag="v1")
    (image,) = source.images.values()
    remote = f"docker://{server.host}/team/app:v1"

    try:
        skopeo.copy(source.ref("v1"), remote)
        skopeo.copy(remote, f"oci:{tmp_path / 'pulled'}:v1")
    finally:
        server.stop()
        wipe(s3_server.store(prefix))

    assert tagged_digest(tmp_path / "pulled", "v1") == image.manifest.digest


def test_the_classic_guide_with_docker_skopeo_and_podman(
    tmp_path: Path, docker: Docker, sample: Path
) -> None:
    """The whole guide, as an operator follows it: the sample copied unchanged, a flavor of
    their own appended that inherits `local` and adds users, the two variables, `curl /`; then
    developers log in, push, search and pull with docker, skopeo and podman."""
    htpasswd = tmp_path / "htpasswd"
    add_user(htpasswd, "alice", "alice-Secret-1", rounds=4)
    sample.write_text(
        SAMPLE.read_text()
        + "\nguide:\n    <<: *local\n    search_backend: sqlalchemy\n"
        + f"    auth:\n        htpasswd:\n            path: {htpasswd}\n"
        + "        access:\n            user_namespaces: true\n"
    )
    root = tmp_path / "guide"
    environ = {
        "STORAGE_PATH": str(tmp_path / "storage"),
        "SQLALCHEMY_INDEX_DATABASE": f"sqlite:///{tmp_path / 'index.db'}",
    }
    server = ClassicServer(root, sample, "guide", environ)
    server.start()
    try:
        banner = httpx.get(f"{server.url}/", timeout=10)
        login = docker.login(server.host, "alice", "alice-Secret-1")
        reference = f"{server.host}/alice/kite:v1"
        docker.import_image(reference, {"/hello.txt": os.urandom(32).hex().encode()})
        pushed = docker.push(reference)
        found = docker("search", "--format", "{{.Name}}", f"{server.host}/kite").stdout.split()
        docker("rmi", reference)
        pulled = docker.pull(reference)

        skopeo = skopeo_for(tmp_path / "skopeo", server.host)
        copied = tmp_path / "copied"
        skopeo(
            "copy",
            "--src-tls-verify=false",
            "--src-creds=alice:alice-Secret-1",
            f"docker://{reference}",
            f"dir:{copied}",  # the manifest kept as the registry serves it
        )
        with podman_for(tmp_path / "podman", server.host) as podman:
            podman(
                "pull",
                "--tls-verify=false",
                "--creds=alice:alice-Secret-1",
                "-q",
                reference,
            )
            podman_digests = podman.images()
    finally:
        server.stop()

    assert banner.text == '"docker-registry server"'
    assert login.returncode == 0, login.stderr
    assert found == ["alice/kite"]
    assert pulled == pushed
    assert "sha256:" + hashlib.sha256((copied / "manifest.json").read_bytes()).hexdigest() == pushed
    assert any(reference in image["Names"] for image in podman_digests)
