"""Portside behind nginx with the shipped deploy/nginx/portside.conf: TLS at nginx and the
htpasswd login at Portside, skopeo and podman logging in and pushing through it with the
certificate verified, a 300 MiB layer streamed through without nginx spooling it to disk, the
open classic paths with search listing nothing to anonymous callers; and the classic alternative,
deploy/nginx/portside-nginx-auth.conf, nginx doing the basic auth, search included."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from portside.auth.htpasswd import add_user

from .clients import Podman, Skopeo, digest_of, podman_for, skopeo_for
from .conftest import ServerFactory
from .images import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    MiB,
    big_layer_image,
    multi_layer_image,
    tagged_digest,
    verify_layout_blobs,
)
from .nginx import SHIPPED_NGINX_AUTH, Nginx, have_nginx
from .tls import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e

USER, PASSWORD = "alice", "correct horse battery staple"
BIG_LAYER = 300 * MiB
SPOOLED = "buffered to a temporary file"  # nginx's warning when it spools a body to disk


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "portside.htpasswd"
    # nginx checks the password on every request, in its event loop: a low bcrypt cost, as
    # Apache's `htpasswd -B` uses by default.
    add_user(path, USER, PASSWORD, rounds=5)
    return path


@pytest.fixture
def nginx(tmp_path: Path, tls: TlsFiles, htpasswd: Path) -> Iterator[Nginx]:
    if not have_nginx():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    front = Nginx(tmp_path / "nginx", tls, htpasswd)
    yield front
    front.stop()


# What the recipe's Portside side holds: its own login, every logged-in user may do anything.
# One repository anyone may pull, to show what search lists to anonymous callers.
PORTSIDE_AUTH = {
    "access": {
        "anonymous_pull": ["e2e/public"],
        "rules": [{"repositories": ["*"], "authenticated": True, "actions": ["*"]}],
    }
}


@pytest.fixture
def front(portside_factory: ServerFactory, nginx: Nginx, htpasswd: Path) -> Nginx:
    """nginx, started in front of a fresh Portside that trusts its forwarded headers and checks
    the logins from its htpasswd file."""
    auth = {"htpasswd": {"path": str(htpasswd)}, **PORTSIDE_AUTH}
    backend = portside_factory(trust_forwarded_headers=True, auth=auth)
    nginx.start(backend.host)
    return nginx


@pytest.fixture
def skopeo(tmp_path: Path, front: Nginx, tls: TlsFiles) -> Skopeo:
    return skopeo_for(tmp_path / "skopeo", front.host, tls.cert_dir)


@pytest.fixture
def podman(tmp_path: Path, front: Nginx, tls: TlsFiles) -> Iterator[Podman]:
    with podman_for(tmp_path / "podman", front.host, tls.cert_dir) as client:
        yield client


def login(client: Skopeo | Podman, host: str, password: str = PASSWORD) -> int:
    """`login` with USER; returns its exit status."""
    options = ["--username", USER, "--password", password, host]
    return client("login", *client.tls_options(), *options, check=False).returncode


def test_skopeo_and_podman_log_in_push_and_pull_through_nginx(
    tmp_path: Path, front: Nginx, skopeo: Skopeo, podman: Podman
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1")
    (image,) = source.images.values()
    remote = f"docker://{front.host}/e2e/behind-nginx"

    assert login(skopeo, front.host, "wrong password") != 0
    assert login(skopeo, front.host) == 0
    skopeo.copy(source.ref("v1"), f"{remote}:v1")
    skopeo.copy(f"{remote}:v1", f"oci:{tmp_path / 'pulled'}:v1")

    assert tagged_digest(tmp_path / "pulled", "v1") == image.manifest.digest
    pulled = verify_layout_blobs(tmp_path / "pulled")
    assert all(pulled.get(blob.digest) == blob.size for blob in image.blobs)
    skopeo("logout", front.host)
    refused = skopeo("list-tags", *skopeo.tls_options(), remote, check=False)
    assert refused.returncode != 0
    assert "authentication required" in refused.stderr or "401" in refused.stderr

    name = f"{front.host}/e2e/behind-nginx-podman:v1"
    image_id = podman.load(source.ref("v1"), name)
    assert login(podman, front.host) == 0
    digest_file = tmp_path / "podman-digest"
    podman("push", *podman.tls_options(), "--digestfile", str(digest_file), name)
    podman("rmi", "--all", "--force")
    podman("pull", *podman.tls_options(), name)

    (listed,) = podman.images()
    assert listed["Id"] == image_id
    assert listed["Digest"] == digest_file.read_text().strip()
    assert SPOOLED not in front.log()


def curl(front: Nginx, path: str, *options: str) -> tuple[int, str, dict[str, list[str]]]:
    """GET through nginx with curl over HTTP/2: (status, HTTP version, headers by lower name)."""
    result = subprocess.run(
        [
            *("curl", "--silent", "--show-error", "--http2", "--cacert", str(front.tls.ca_file)),
            *("--dump-header", "-", "--output", "/dev/null", "--write-out", "%{http_version}"),
            *options,
            f"{front.url}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    *header_lines, version = result.stdout.splitlines()
    status = int(header_lines[0].split()[1])
    headers: dict[str, list[str]] = {}
    for line in header_lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, version, headers


def search(front: Nginx, *options: str) -> tuple[int, list[str]]:
    """GET /v1/search?q=e2e through nginx: (status, repository names listed)."""
    result = subprocess.run(
        [
            *("curl", "--silent", "--http2", "--cacert", str(front.tls.ca_file)),
            *("--write-out", "\n%{http_code}", *options, f"{front.url}/v1/search?q=e2e"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    names = [r["name"] for r in json.loads(body)["results"]] if status == "200" else []
    return int(status), names


def push_one(front: Nginx, repository: str) -> None:
    verify = front.tls.ssl_context()
    with httpx.Client(base_url=front.url, auth=(USER, PASSWORD), verify=verify) as http:
        config = b"{}"
        http.post(
            f"/v2/{repository}/blobs/uploads/", params={"digest": digest_of(config)}, content=config
        ).raise_for_status()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": 2},
            "layers": [],
        }
        http.put(
            f"/v2/{repository}/manifests/v1",
            content=json.dumps(manifest),
            headers={"Content-Type": OCI_MANIFEST},
        ).raise_for_status()


def test_classic_paths_are_open_and_the_registry_api_asks_for_a_login(front: Nginx) -> None:
    credentials = ("--user", f"{USER}:{PASSWORD}")
    push_one(front, "e2e/private")
    push_one(front, "e2e/public")

    assert curl(front, "/v1/_ping")[:2] == (200, "2")
    assert curl(front, "/")[0] == 200
    # Open, as `docker search` wants, but Portside lists only what the caller may pull.
    assert search(front) == (200, ["e2e/public"])
    assert sorted(search(front, *credentials)[1]) == ["e2e/private", "e2e/public"]
    status, _, headers = curl(front, "/v2/")
    assert status == 401
    assert headers["docker-distribution-api-version"] == ["registry/2.0"]
    assert headers["www-authenticate"][0].startswith("Basic ")
    assert curl(front, "/v2/_catalog")[0] == 401
    assert curl(front, "/v2/e2e/private/tags/list")[0] == 401
    assert curl(front, "/v2/", "--user", f"{USER}:wrong")[0] == 401
    status, _, headers = curl(front, "/v2/", *credentials)
    assert status == 200
    # Portside's own header passes through, and nginx adds no second one.
    assert headers["docker-distribution-api-version"] == ["registry/2.0"]


def test_with_nginx_doing_the_auth_search_needs_a_login_too(
    tmp_path: Path, portside_factory: ServerFactory, tls: TlsFiles, htpasswd: Path
) -> None:
    if not have_nginx():
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    front = Nginx(tmp_path / "nginx-auth", tls, htpasswd, site=SHIPPED_NGINX_AUTH)
    front.start(portside_factory(trust_forwarded_headers=True).host)
    try:
        credentials = ("--user", f"{USER}:{PASSWORD}")
        push_one(front, "e2e/private")

        assert curl(front, "/v1/_ping")[0] == 200
        assert curl(front, "/")[0] == 200
        # Portside, its auth off, would list every repository: nginx asks for a login.
        assert search(front)[0] == 401
        assert search(front, "--user", f"{USER}:wrong")[0] == 401
        assert search(front, *credentials) == (200, ["e2e/private"])
        status, _, headers = curl(front, "/v2/")
        assert status == 401
        assert headers["docker-distribution-api-version"] == ["registry/2.0"]
        assert curl(front, "/v2/_catalog")[0] == 401
        assert curl(front, "/anything/else")[0] == 401
        status, _, headers = curl(front, "/v2/", *credentials)
        assert status == 200
        assert headers["docker-distribution-api-version"] == ["registry/2.0"]
    finally:
        front.stop()


@pytest.mark.slow
def test_a_big_layer_streams_through_nginx_both_ways_without_spooling(
    tmp_path: Path, front: Nginx, skopeo: Skopeo
) -> None:
    source = big_layer_image(tmp_path / "source", size=BIG_LAYER)
    (image,) = source.images.values()
    remote = f"docker://{front.host}/e2e/big-behind-nginx:big"
    assert login(skopeo, front.host) == 0

    with TempFileWatch(front) as pushing:
        skopeo.copy(source.ref("big"), remote)
    with TempFileWatch(front) as pulling:
        skopeo.copy(remote, f"oci:{tmp_path / 'pulled'}:big")

    assert pushing.seen == pulling.seen == set()
    assert SPOOLED not in front.log()
    (layer,) = image.layers
    assert layer.size > BIG_LAYER
    assert verify_layout_blobs(tmp_path / "pulled").get(layer.digest) == layer.size


class TempFileWatch:
    """Polls nginx's temp files while a transfer runs: a 300 MiB body spooled to disk would be
    there for seconds."""

    def __init__(self, nginx: Nginx) -> None:
        self.nginx = nginx
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.seen |= self.nginx.temp_files()

    def __enter__(self) -> TempFileWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


URL_IN_HEADER = re.compile(r'<([^>]*)>|realm="([^"]*)"')


def emitted_urls(response: httpx.Response) -> list[str]:
    """The URLs a response hands the client: Location, Link targets, WWW-Authenticate realms."""
    urls = response.headers.get_list("location")
    for name in ("link", "www-authenticate"):
        for value in response.headers.get_list(name):
            urls += [a or b for a, b in URL_IN_HEADER.findall(value)]
    return urls


@pytest.mark.parametrize("setting", ["trust_forwarded_headers", "public_url"])
def test_urls_portside_sends_through_nginx_lead_back_to_nginx(
    portside_factory: ServerFactory, nginx: Nginx, setting: str
) -> None:
    value: object = True if setting == "trust_forwarded_headers" else nginx.url
    backend = portside_factory(**{setting: value})
    nginx.start(backend.host)
    responses: list[httpx.Response] = []
    verify = nginx.tls.ssl_context()
    with httpx.Client(base_url=nginx.url, auth=(USER, PASSWORD), verify=verify) as http:
        http.event_hooks["response"] = [responses.append]
        config, layer = b"{}", b"layer bytes" * 100
        started = http.post("/v2/e2e/urls/blobs/uploads/")
        patched = http.patch(started.headers["location"], content=layer)
        put = http.put(patched.headers["location"], params={"digest": digest_of(layer)})
        assert put.status_code == 201, put.text
        http.post(
            "/v2/e2e/urls/blobs/uploads/", params={"digest": digest_of(config)}, content=config
        )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": 2},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}
                ],
            }
        )
        for tag in ("a", "b"):
            pushed = http.put(
                f"/v2/e2e/urls/manifests/{tag}",
                content=manifest,
                headers={"Content-Type": OCI_MANIFEST},
            )
            assert pushed.status_code == 201, pushed.text
        paged = http.get("/v2/e2e/urls/tags/list", params={"n": 1})
        assert paged.status_code == 200
        assert "link" in paged.headers

    urls = [url for response in responses for url in emitted_urls(response)]
    assert len(urls) >= 6
    for url in urls:
        assert not urlsplit(url).netloc or url.startswith(f"{nginx.url}/"), url
    for response in responses:
        assert backend.host not in str(response.headers), response.headers
