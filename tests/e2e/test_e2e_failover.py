"""Scale-out under failure: three `portside serve` instances, A, B and C, on one S3 bucket prefix
(tests/s3.py) and one PostgreSQL schema (tests/postgres.py), behind a real nginx balancing them
round robin on loopback (balancer.py: `proxy_next_upstream error timeout`, so a request that
cannot reach a dead instance goes to the next). Auth is on: htpasswd users and the built-in token
service, with one signing key file that all three read, refresh tokens in the database, the
realm at nginx (`public_url`), and `trust_forwarded_headers` for the client addresses nginx passes.

B is killed with SIGKILL (its whole process group) while skopeo pushes through nginx and while an
upload's PATCH streams into it, then restarted. What must hold: the clients' retries succeed,
every push that was acknowledged pulls intact afterwards (digests compared) through nginx and
from each instance, an upload resumes on another instance from the range B acknowledged, and
tokens, refresh tokens and failed logins behave as those of one registry.

Skipped, with the reason, when S3, PostgreSQL, nginx, skopeo or podman cannot be had. The three
instances are started once for the module; the failed-login test runs last, from an address of
its own (X-Forwarded-For), so its limit stops nobody else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from portside.auth.htpasswd import Scheme, add_user
from portside.auth.keys import SigningKey
from postgres import schema
from s3 import S3Server

from .balancer import Balancer
from .clients import have, podman_for, skopeo_for
from .conftest import SERVERS
from .images import Layout, multi_layer_image, tagged_digest, verify_layout_blobs
from .nginx import have_nginx
from .server import PORTSIDE, PortsideServer

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
SERVICE = "portside-failover"
USERS = {
    "pusher": "pusher-Secret-1",
    "reader": "reader-Secret-2",
    "victim": "victim-Secret-3",  # whose password is guessed
    "bystander": "bystander-Secret-4",  # who logs in only where the guesses came from
}
ACCESS = {
    "rules": [
        {"repositories": ["fo/*"], "users": ["pusher"], "actions": ["*"]},
        {"repositories": ["fo/*"], "users": ["reader", "victim", "bystander"], "actions": ["pull"]},
    ]
}
LOGIN_FAILURES = 4  # more than any one instance sees in test_failed_logins_are_counted_across...
RETRIES = ["--retry-times=5"]
LEASE_TTL = 30  # seconds: registry/upload_lock.py's, on an upload whose writer died


@dataclass
class Cluster:
    instances: list[PortsideServer]
    nginx: Balancer
    key: Path

    def token_url(self, server: PortsideServer) -> str:
        return f"{server.url}/auth/token"


@pytest.fixture(scope="module")
def cluster(
    s3_server: S3Server, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    for tool, have_it in (("nginx", have_nginx()), ("skopeo", have("skopeo"))):
        if not have_it:
            pytest.skip(f"{tool} is not installed")
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable at {PORTSIDE}")
    root = tmp_path_factory.mktemp("failover")
    htpasswd = root / "htpasswd"
    for user, secret in USERS.items():
        add_user(htpasswd, user, secret, scheme=Scheme.BCRYPT, rounds=4)
    key = root / "token-key.pem"  # made before any instance starts: all three read this one
    key.write_bytes(SigningKey.generate().to_pem())
    key.chmod(0o600)
    with schema(postgres_url) as database_url:
        shared: dict[str, Any] = {
            **s3_server.portside_settings(),
            "database_url": database_url,
            "trust_forwarded_headers": True,
            "auth": {
                "htpasswd": {"path": str(htpasswd)},
                "token": {"service": SERVICE, "key_path": str(key)},
                "access": ACCESS,
                "login_limit": {"failures": LOGIN_FAILURES, "window_seconds": 60},
            },
        }
        instances = [PortsideServer(root / name, 1, shared) for name in ("a", "b", "c")]
        nginx = Balancer(root / "nginx", [server.host for server in instances])
        for server in instances:
            server.settings["public_url"] = nginx.url
        try:
            start_all(instances)
            nginx.start()
            yield Cluster(instances, nginx, key)
        finally:
            nginx.stop()
            for server in instances:
                server.stop()


def start_all(servers: list[PortsideServer]) -> None:
    """Start them at the same moment: on the empty database one migrates, the others wait."""
    errors: list[BaseException] = []

    def start(server: PortsideServer) -> None:
        try:
            server.start()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(autouse=True)
def _all_running(request: pytest.FixtureRequest, cluster: Cluster) -> None:
    """Every instance up (one an earlier test left killed, restarted); their logs on failure."""
    request.node.stash[SERVERS] = list(cluster.instances)
    for server in cluster.instances:
        if server.process is None:
            server.start()


def basic(user: str, secret: str | None = None) -> dict[str, str]:
    pair = f"{user}:{USERS[user] if secret is None else secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issue(http: httpx.Client, server: PortsideServer, user: str, scope: str) -> dict[str, Any]:
    """A token and a refresh token from server's own token endpoint (not through nginx)."""
    response = http.get(
        f"{server.url}/auth/token",
        params={"service": SERVICE, "scope": scope, "offline_token": "true", "client_id": "e2e"},
        headers=basic(user),
    )
    assert response.status_code == 200, (server.host, response.status_code, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def refresh(http: httpx.Client, server: PortsideServer, refresh_token: str, scope: str) -> Any:
    return http.post(
        f"{server.url}/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "service": SERVICE,
            "client_id": "e2e",
            "scope": scope,
        },
    )


def login(command: list[str], env: dict[str, str], host: str, user: str) -> None:
    result = subprocess.run(
        [*command, "login", "--tls-verify=false", "--username", user, "--password-stdin", host],
        input=USERS[user] + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_digest(http: httpx.Client, server: PortsideServer, repository: str, tag: str) -> str:
    token = issue(http, server, "reader", f"repository:{repository}:pull")["token"]
    response = http.head(
        f"{server.url}/v2/{repository}/manifests/{tag}",
        headers={
            **bearer(token),
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    assert response.status_code == 200, (server.host, repository, response.status_code)
    digest: str = response.headers["docker-content-digest"]
    return digest


def assert_pulled(pulled: Path, source: Layout, tag: str) -> None:
    assert tagged_digest(pulled, tag) == source.tags[tag].digest
    on_disk = verify_layout_blobs(pulled)  # every blob's digest recomputed from its bytes
    for image in source.images.values():
        for blob in [image.manifest, *image.blobs]:
            assert on_disk.get(blob.digest) == blob.size, f"{blob.digest} missing or resized"


class Background(threading.Thread):
    """A client command in a thread; its error, if any, kept for the test to raise."""

    def __init__(self, target: Any, *args: Any) -> None:
        super().__init__(daemon=True)
        self._call = (target, args)
        self.error: BaseException | None = None

    def run(self) -> None:
        target, args = self._call
        try:
            target(*args)
        except BaseException as error:
            self.error = error

    def result(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self._call[0]} still running after {timeout}s"
        if self.error is not None:
            raise self.error


def lasting_connection(nginx: Balancer, port: int, client: Background) -> set[str]:
    """A connection of nginx to an instance open for 0.1 s, while the client runs (within 30 s):
    nginx keeps none idle, and HEADs, POSTs and manifests take milliseconds, so it carries a
    PATCH of a 32 MiB layer that the instance is writing to the bucket."""
    deadline = time.monotonic() + 30
    opened: dict[str, float] = {}
    while True:
        now = time.monotonic()
        current = nginx.connections_to(port)
        opened = {inode: opened.get(inode, now) for inode in current}
        if lasting := {inode for inode, since in opened.items() if now - since >= 0.1}:
            return lasting
        if not client.is_alive():
            raise AssertionError("the client ended before a request lasted on the instance") from (
                client.error
            )
        assert now < deadline, "nginx sent the instance no lasting request"
        time.sleep(0.02)


class StalledBody:
    """A request body that sends `first` bytes, then waits (at most 30 s) for `release`: the
    request is in flight on its server for as long as the test wants."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.first, self.rest = first, rest
        self.sent = threading.Event()  # `first` has been handed to the socket
        self.release = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        self.sent.set()
        self.release.wait(30)
        yield self.rest


def test_pushes_survive_an_instance_killed_mid_push_and_restarted(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b, c = cluster.instances
    nginx = cluster.nginx
    timings: dict[str, float] = {}
    began = time.monotonic()
    skopeo = skopeo_for(tmp_path / "skopeo", nginx.host)
    login(["skopeo", "--tmpdir", str(skopeo.tmpdir)], skopeo.env, nginx.host, "pusher")
    sources = {
        name: multi_layer_image(tmp_path / f"source-{name}", tag="v1", sizes=sizes)
        for name, sizes in [
            ("before", [256 * 1024, 64 * 1024]),
            ("during", [32 * MiB, 32 * MiB, 32 * MiB, 64 * 1024]),
            ("while-dead", [512 * 1024, 32 * 1024]),
            ("after", [384 * 1024, 16 * 1024]),
        ]
    }
    pushed: dict[str, str] = {}  # repository: source name, for every push that succeeded

    def push(name: str, *options: str) -> None:
        skopeo.copy(sources[name].ref("v1"), f"docker://{nginx.host}/fo/{name}:v1", *options)
        pushed[f"fo/{name}"] = name

    push("before")
    with httpx.Client(timeout=60) as http:
        # A refresh token issued by B, the instance about to die.
        from_b = issue(http, b, "pusher", "repository:fo/upload:pull,push")
        timings["all up"] = time.monotonic() - began

        # An upload: POST through nginx, a first chunk acknowledged by B, a second streaming
        # into B when it dies.
        data = os.urandom(12 * MiB)
        auth = bearer(from_b["token"])
        started = http.post(f"{nginx.url}/v2/fo/upload/blobs/uploads/", headers=auth)
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        path = location.removeprefix(nginx.url)
        first = http.patch(
            f"{b.url}{path}",
            content=data[: 9 * MiB],
            headers={**auth, "Content-Type": "application/octet-stream"},
        )
        assert first.status_code == 202, first.text
        assert first.headers["range"] == f"0-{9 * MiB - 1}"
        path = first.headers["location"].removeprefix(nginx.url)
        stalled = StalledBody(data[9 * MiB : 10 * MiB], data[10 * MiB :])

        def stream_into_b() -> None:
            with httpx.Client(timeout=60) as own:
                own.patch(
                    f"{b.url}{path}",
                    content=stalled,
                    headers={**auth, "Content-Type": "application/octet-stream"},
                )

        streaming = Background(stream_into_b)
        streaming.start()
        assert stalled.sent.wait(30), "the PATCH into B never started"

        # skopeo pushing three layers of 32 MiB through nginx, with retries, and pulling; B
        # dies while it takes one of the layers.
        pushing: list[subprocess.CompletedProcess[str]] = []

        def push_during() -> None:
            pushing.append(
                skopeo(
                    "copy",
                    "--dest-tls-verify=false",
                    "--preserve-digests",
                    *RETRIES,
                    sources["during"].ref("v1"),
                    f"docker://{nginx.host}/fo/during:v1",
                )
            )
            pushed["fo/during"] = "during"

        during = Background(push_during)
        during.start()
        pulling = Background(
            skopeo.copy,
            f"docker://{nginx.host}/fo/before:v1",
            f"oci:{tmp_path / 'pulled-during'}:v1",
            *RETRIES,
        )
        pulling.start()
        lasting_connection(nginx, b.port, during)
        b.kill()
        killed_at = time.monotonic()
        timings["B killed"] = killed_at - began
        stalled.release.set()
        streaming.join(30)
        assert streaming.error is not None, "the PATCH into B outlived B"

        during.result(120)
        pulling.result(120)
        timings["push and pull during the kill done"] = time.monotonic() - began
        assert_pulled(tmp_path / "pulled-during", sources["before"], "v1")
        # The request B held died with it: nginx dropped skopeo's connection and skopeo tried
        # again, or (a PUT, which nginx may send again) nginx passed it on to another instance.
        client_retried = "retrying" in pushing[0].stderr.lower()
        passed_on = [
            line
            for line in nginx.lines()
            if line.upstream.startswith(f"{b.host}, ") and line.method != "GET"
        ]
        assert client_retried or passed_on, (pushing[0].stderr, nginx.lines())
        outcome = "skopeo retried" if client_retried else "nginx passed B's request on"

        # While B is dead: skopeo and podman push and pull through nginx.
        push("while-dead", *RETRIES)
        # podman retries a failed copy itself (three times; 4.3 has no --retry to set).
        with podman_for(tmp_path / "podman", nginx.host) as podman:
            login(["podman", *podman.global_options], podman.env, nginx.host, "pusher")
            (image,) = sources["after"].images.values()
            image_id = podman.load(sources["after"].ref("v1"), f"{nginx.host}/fo/podman:v1")
            assert image_id == image.config.digest.removeprefix("sha256:")
            digest_file = tmp_path / "podman-digest"
            podman(
                "push",
                "--tls-verify=false",
                "--digestfile",
                str(digest_file),
                f"{nginx.host}/fo/podman:v1",
            )
            # podman compresses the layers again, so its manifest is its own: the one it wrote.
            podman_digest = digest_file.read_text().strip()
            podman("rmi", "--all", "--force")
            podman("pull", "--tls-verify=false", f"{nginx.host}/fo/before:v1")
            (listed,) = podman.images()
            (before,) = sources["before"].images.values()
            assert listed["Id"] == before.config.digest.removeprefix("sha256:")
            podman("rmi", "--all", "--force")
            podman("pull", "--tls-verify=false", f"{nginx.host}/fo/podman:v1")
            (listed,) = podman.images()
            assert listed["Id"] == image_id
            podman("rmi", "--all", "--force")

        # B's refresh token, through the instances still up.
        for server in (a, c):
            renewed = refresh(http, server, from_b["refresh_token"], "repository:fo/upload:pull")
            assert renewed.status_code == 200, (server.host, renewed.text)
        timings["while B dead"] = time.monotonic() - began

        # The upload goes on through nginx (A or C) from what B acknowledged, once B's lease on
        # it (registry/upload_lock.py, LEASE_TTL) has run out: until then it is 416.
        status = http.get(f"{nginx.url}{path}", headers=auth)
        assert status.status_code == 204, status.text
        kept = int(status.headers["range"].partition("-")[2]) + 1
        assert 9 * MiB <= kept <= 10 * MiB, status.headers["range"]  # B's acknowledged chunk
        while True:
            finished = http.put(
                f"{nginx.url}{path}",
                params={"digest": digest_of(data)},
                content=data[kept:],
                headers={**auth, "Content-Type": "application/octet-stream"},
            )
            if finished.status_code != 416 or time.monotonic() > killed_at + LEASE_TTL + 15:
                break
            assert "concurrent request" in finished.text, finished.text
            time.sleep(1)
        assert finished.status_code == 201, finished.text
        timings["upload resumed"] = time.monotonic() - began

        # B back, on the same port: nginx uses it again after fail_timeout.
        b.start()
        timings["B restarted"] = time.monotonic() - began
        time.sleep(nginx.fail_timeout + 0.5)
        requests_to_b = len(b.access_lines())
        push("after", *RETRIES)
        assert len(b.access_lines()) > requests_to_b, "nginx sent nothing to the restarted B"
        renewed = refresh(http, b, from_b["refresh_token"], "repository:fo/upload:pull")
        assert renewed.status_code == 200, renewed.text

        # Nothing acknowledged is lost: every push, through nginx and from each instance.
        for number, (repository, name) in enumerate(sorted(pushed.items())):
            pulled = tmp_path / f"pulled-{number}"
            skopeo.copy(f"docker://{nginx.host}/{repository}:v1", f"oci:{pulled}:v1", *RETRIES)
            assert_pulled(pulled, sources[name], "v1")
            expected = sources[name].tags["v1"].digest
            for server in (a, b, c):
                assert manifest_digest(http, server, repository, "v1") == expected
        for server in (a, b, c):
            assert manifest_digest(http, server, "fo/podman", "v1") == podman_digest
            token = issue(http, server, "reader", "repository:fo/upload:pull")["token"]
            blob = http.get(
                f"{server.url}/v2/fo/upload/blobs/{digest_of(data)}", headers=bearer(token)
            )
            assert blob.status_code == 200, (server.host, blob.status_code)
            assert digest_of(blob.content) == digest_of(data)
        timings["all verified"] = time.monotonic() - began

    assert {"fo/before", "fo/during", "fo/while-dead", "fo/after"} == set(pushed)
    # nginx went on to another instance for requests B could not take.
    assert any(line.upstream.startswith(f"{b.host}, ") for line in nginx.lines())
    print(f"failover: {outcome}; seconds since the start:", json.dumps(timings))


def test_tokens_and_refresh_tokens_of_one_instance_work_on_every_other(cluster: Cluster) -> None:
    """One signing key file and one database: a token signed by any instance is accepted by
    every other, and a refresh token issued by any is redeemed by every other."""
    with httpx.Client(timeout=30) as http:
        for issuer in cluster.instances:
            issued = issue(http, issuer, "pusher", "repository:fo/before:pull")
            for other in cluster.instances:
                if other is issuer:
                    continue
                seen = http.get(
                    f"{other.url}/v2/fo/before/tags/list", headers=bearer(issued["token"])
                )
                assert seen.status_code == 200, (issuer.host, other.host, seen.text)
                renewed = refresh(http, other, issued["refresh_token"], "repository:fo/before:pull")
                assert renewed.status_code == 200, (issuer.host, other.host, renewed.text)
                again = http.get(
                    f"{issuer.url}/v2/fo/before/tags/list", headers=bearer(renewed.json()["token"])
                )
                assert again.status_code == 200, (issuer.host, other.host, again.text)


def test_failed_logins_are_counted_across_instances(cluster: Cluster) -> None:
    """LOGIN_FAILURES wrong passwords spread over A, B and C (no instance sees them all) stop the
    next login of that user, and from that address, on any instance, the right password too."""
    a, b, c = cluster.instances
    address = {"X-Forwarded-For": "192.0.2.77"}  # an address of this test's own

    def token(server: PortsideServer, user: str, secret: str | None = None, **headers: str) -> Any:
        return http.get(
            f"{server.url}/auth/token",
            params={"service": SERVICE, "scope": "repository:fo/before:pull"},
            headers={**basic(user, secret), **headers},
        )

    with httpx.Client(timeout=30) as http:
        spread = [a, b, c, a][:LOGIN_FAILURES]
        for server in spread:
            refused = token(server, "victim", "wrong-password", **address)
            assert refused.status_code == 401, (server.host, refused.status_code, refused.text)
        for server in (b, c):
            limited = token(server, "victim", **address)  # the right password
            assert limited.status_code == 429, (server.host, limited.status_code, limited.text)
            assert int(limited.headers["retry-after"]) > 0
            # The address too (for a user no worker has a verified login of in its cache).
            other_user = token(server, "bystander", **address)
            assert other_user.status_code == 429, (server.host, other_user.status_code)
        # Another address, with another user, is not held back.
        fine = token(c, "bystander", **{"X-Forwarded-For": "192.0.2.78"})
        assert fine.status_code == 200, fine.text
