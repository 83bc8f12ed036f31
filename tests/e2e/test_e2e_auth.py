"""Authentication with real clients: `skopeo login` and `podman login`, then push and pull, against
htpasswd entries of several formats and against the built-in token service; wrong passwords and
pull-only users are refused, and no credential reaches the server's log."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from portside.auth.htpasswd import Scheme, add_user

from .clients import Podman, Skopeo, podman_for, skopeo_for
from .conftest import ServerFactory
from .images import Layout, multi_layer_image
from .server import PortsideServer

pytestmark = pytest.mark.e2e

# One user per htpasswd format; each may push to its own namespace (user_namespaces).
USERS = {
    "bcrypt-user": (Scheme.BCRYPT, "bcrypt-Secret-1"),
    "apr1-user": (Scheme.MD5, "apr1-Secret-2"),
    "sha1-user": (Scheme.SHA1, "sha1-Secret-3"),
    "crypt-user": (Scheme.CRYPT, "cryptpw4"),  # DES crypt reads 8 characters
    "reader": (Scheme.BCRYPT, "reader-Secret-5"),
}
ACCESS = {
    "user_namespaces": True,
    "anonymous_pull": ["public/*"],
    "rules": [
        {"repositories": ["team/*"], "users": ["reader"], "actions": ["pull"]},
        {"repositories": ["team/*", "public/*"], "users": ["bcrypt-user"], "actions": ["*"]},
    ],
}


def password(user: str) -> str:
    return USERS[user][1]


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    for user, (scheme, secret) in USERS.items():
        add_user(path, user, secret, scheme=scheme, rounds=4 if scheme is Scheme.BCRYPT else None)
    return path


def auth(htpasswd: Path, **extra: Any) -> dict[str, Any]:
    return {"htpasswd": {"path": str(htpasswd)}, "access": ACCESS, **extra}


@pytest.fixture(params=["basic", "token"])
def server(
    request: pytest.FixtureRequest, portside_factory: ServerFactory, htpasswd: Path
) -> PortsideServer:
    """A registry with Basic auth, or with the built-in token service."""
    extra = {"token": {"service": "portside-e2e"}} if request.param == "token" else {}
    return portside_factory(auth=auth(htpasswd, **extra))


@pytest.fixture
def skopeo(tmp_path: Path, server: PortsideServer) -> Skopeo:
    return skopeo_for(tmp_path / "skopeo", server.host)


@pytest.fixture
def podman(tmp_path: Path, server: PortsideServer) -> Iterator[Podman]:
    with podman_for(tmp_path / "podman", server.host) as client:
        yield client


def login(
    command: list[str], env: dict[str, str], host: str, user: str, secret: str
) -> subprocess.CompletedProcess[str]:
    """`<tool> login` with the password on stdin, as an operator would script it."""
    return subprocess.run(
        [*command, "login", "--tls-verify=false", "--username", user, "--password-stdin", host],
        input=secret + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def skopeo_login(skopeo: Skopeo, host: str, user: str, secret: str | None = None) -> Any:
    command = ["skopeo", "--policy", str(skopeo.policy), "--tmpdir", str(skopeo.tmpdir)]
    return login(command, skopeo.env, host, user, password(user) if secret is None else secret)


def podman_login(podman: Podman, host: str, user: str, secret: str | None = None) -> Any:
    command = ["podman", *podman.global_options]
    return login(command, podman.env, host, user, password(user) if secret is None else secret)


def assert_no_secret_in_log(server: PortsideServer) -> None:
    log = server.log_text()
    for _, secret in USERS.values():
        assert secret not in log
    assert "Basic " not in log
    assert "Bearer " not in log
    assert "?" not in " ".join(line.path for line in server.access_lines())


@pytest.mark.slow
def test_users_of_every_htpasswd_format_log_in_push_and_pull(
    tmp_path: Path, server: PortsideServer, skopeo: Skopeo, podman: Podman
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1", sizes=[1024, 2048])
    for user in ("bcrypt-user", "apr1-user", "sha1-user", "crypt-user"):
        result = skopeo_login(skopeo, server.host, user)
        assert result.returncode == 0, result.stderr
        remote = f"{server.host}/{user}/app:v1"

        skopeo.copy(source.ref("v1"), f"docker://{remote}")

        result = podman_login(podman, server.host, user)
        assert result.returncode == 0, result.stderr
        podman("pull", "--tls-verify=false", "-q", remote)
        assert any(remote in image["Names"] for image in podman.images())
    assert_no_secret_in_log(server)


def test_a_wrong_password_fails_the_login(
    server: PortsideServer, skopeo: Skopeo, podman: Podman
) -> None:
    for user in ("bcrypt-user", "crypt-user"):
        refused = skopeo_login(skopeo, server.host, user, "wrong-password")
        assert refused.returncode != 0
        assert "invalid username/password" in refused.stderr
    refused = podman_login(podman, server.host, "apr1-user", "wrong-password")
    assert refused.returncode != 0
    assert "invalid username/password" in refused.stderr
    assert_no_secret_in_log(server)


def test_a_pull_only_user_can_pull_but_not_push(
    tmp_path: Path, server: PortsideServer, skopeo: Skopeo
) -> None:
    source = Layout(tmp_path / "source")
    source.add_image([1024], tag="v1")
    assert skopeo_login(skopeo, server.host, "bcrypt-user").returncode == 0
    skopeo.copy(source.ref("v1"), f"docker://{server.host}/team/app:v1")

    assert skopeo_login(skopeo, server.host, "reader").returncode == 0
    pulled = tmp_path / "pulled"
    skopeo.copy(f"docker://{server.host}/team/app:v1", f"oci:{pulled}:v1")
    refused = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        source.ref("v1"),
        f"docker://{server.host}/team/app:v2",
        check=False,
    )

    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() or "unauthorized" in refused.stderr.lower()
    # Basic credentials work in token mode too.
    tags = httpx.get(
        f"{server.url}/v2/team/app/tags/list", auth=("bcrypt-user", password("bcrypt-user"))
    )
    assert tags.json()["tags"] == ["v1"]


def test_anyone_pulls_public_repositories_without_logging_in(
    tmp_path: Path, server: PortsideServer, skopeo: Skopeo
) -> None:
    source = Layout(tmp_path / "source")
    source.add_image([1024], tag="v1")
    assert skopeo_login(skopeo, server.host, "bcrypt-user").returncode == 0
    skopeo.copy(source.ref("v1"), f"docker://{server.host}/public/base:v1")
    skopeo("logout", "--all")

    skopeo.copy(f"docker://{server.host}/public/base:v1", f"oci:{tmp_path / 'pulled'}:v1")
    refused = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--retry-times=0",
        source.ref("v1"),
        f"docker://{server.host}/public/base:v2",
        check=False,
    )
    assert refused.returncode != 0


def test_podman_search_after_login_shows_the_users_repositories(
    tmp_path: Path, server: PortsideServer, skopeo: Skopeo, podman: Podman
) -> None:
    """podman sends /v1/search without credentials and asks the authenticated /v2/_catalog
    only when that is not a 200. The user's own repositories must show after `podman login`,
    and another user's must not."""
    source = Layout(tmp_path / "source")
    source.add_image([1024], tag="v1")
    assert skopeo_login(skopeo, server.host, "bcrypt-user").returncode == 0
    skopeo.copy(source.ref("v1"), f"docker://{server.host}/bcrypt-user/kite:v1")
    skopeo.copy(source.ref("v1"), f"docker://{server.host}/team/kite-secret:v1")
    assert skopeo_login(skopeo, server.host, "apr1-user").returncode == 0
    skopeo.copy(source.ref("v1"), f"docker://{server.host}/apr1-user/kite:v1")
    assert podman_login(podman, server.host, "apr1-user").returncode == 0

    result = podman("search", "--tls-verify=false", "--format", "{{.Name}}", f"{server.host}/kite")
    found = {line.strip() for line in result.stdout.splitlines() if line.strip()}

    assert found == {f"{server.host}/apr1-user/kite"}
