"""The real clients the e2e tests drive: skopeo and podman, each with its own config and state under
the test's tmp_path (never the machine's global podman storage), plus a small OCI push helper on
httpx for tests that need control over single requests."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

COMMAND_TIMEOUT = 300.0
POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


Completed = subprocess.CompletedProcess[str]


def run(
    cmd: list[str], env: dict[str, str], timeout: float = COMMAND_TIMEOUT, check: bool = True
) -> Completed:
    """Run a client command; on failure raise AssertionError showing its output."""
    result = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)}\nexited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def _registries_conf(host: str, insecure: bool = True) -> str:
    return (
        f'unqualified-search-registries = []\n[[registry]]\nlocation = "{host}"\n'
        f"insecure = {'true' if insecure else 'false'}\n"
    )


def _tls_options(cert_dir: Path | None, prefix: str = "") -> list[str]:
    if cert_dir is None:
        return [f"--{prefix}tls-verify=false"]
    return [f"--{prefix}tls-verify=true", f"--{prefix}cert-dir", str(cert_dir)]


class Skopeo:
    """skopeo with a trust policy, registries.conf, auth file and temp folder of its own.

    The registry is plain HTTP, unless `cert_dir` is given: a folder holding the CA that the
    registry's certificate chains to, as `ca.crt`; then TLS is verified with it."""

    def __init__(self, base: Path, registry_host: str, cert_dir: Path | None = None) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.tmpdir = base / "tmp"
        self.tmpdir.mkdir(exist_ok=True)
        self.policy = base / "policy.json"
        self.policy.write_text(json.dumps(POLICY))
        registries = base / "registries.conf"
        registries.write_text(_registries_conf(registry_host, insecure=cert_dir is None))
        self.env = _client_env(self.tmpdir, registries)
        self.cert_dir = cert_dir

    def tls_options(self, prefix: str = "") -> list[str]:
        """`--tls-verify` and `--cert-dir` for this registry; prefix `src-` or `dest-` for copy."""
        return _tls_options(self.cert_dir, prefix)

    def __call__(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> Completed:
        cmd = ["skopeo", "--policy", str(self.policy), "--tmpdir", str(self.tmpdir), *args]
        return run(cmd, self.env, timeout, check)

    def copy(self, source: str, destination: str, *options: str) -> None:
        """Copy an image; --preserve-digests makes skopeo fail rather than change any digest."""
        self(
            "copy",
            *self.tls_options("src-"),
            *self.tls_options("dest-"),
            "--preserve-digests",
            "--retry-times=0",
            *options,
            source,
            destination,
        )

    def inspect_raw(self, reference: str) -> bytes:
        result = self("inspect", "--raw", *self.tls_options(), reference)
        return result.stdout.encode()

    def list_tags(self, reference: str) -> list[str]:
        result = self("list-tags", *self.tls_options(), reference)
        tags: list[str] = json.loads(result.stdout)["Tags"]
        return tags


class Podman:
    """podman with storage (vfs), run, tmp, network and volume folders under base, so it never
    touches the machine's own storage; push, pull, tag, images, rmi and search need no container
    runtime. `cert_dir` as for Skopeo: pass `tls_options()` to push, pull, login and search."""

    def __init__(
        self, base: Path, registry_host: str, runroot: Path, cert_dir: Path | None = None
    ) -> None:
        """runroot: podman refuses one longer than 50 characters, so it cannot live in tmp_path."""
        base.mkdir(parents=True, exist_ok=True)
        self.cert_dir = cert_dir
        folders = {name: base / name for name in ("root", "tmp", "networks", "volumes")}
        folders["runroot"] = runroot
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
        registries = base / "registries.conf"
        registries.write_text(_registries_conf(registry_host, insecure=cert_dir is None))
        self.policy = base / "policy.json"
        self.policy.write_text(json.dumps(POLICY))
        self.env = _client_env(folders["tmp"], registries)
        self.global_options = [
            "--root",
            str(folders["root"]),
            "--runroot",
            str(folders["runroot"]),
            "--tmpdir",
            str(folders["tmp"]),
            "--network-config-dir",
            str(folders["networks"]),
            "--volumepath",
            str(folders["volumes"]),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
        ]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> Completed:
        return run(["podman", *self.global_options, *args], self.env, timeout, check)

    def tls_options(self) -> list[str]:
        return _tls_options(self.cert_dir)

    def load(self, layout_reference: str, name: str) -> str:
        """Pull an image from an OCI layout (`oci:DIR:TAG`) into podman's storage and tag it as
        name; returns the image id."""
        pulled = self("pull", "--signature-policy", str(self.policy), "-q", layout_reference)
        image_id = pulled.stdout.split()[-1]
        self("tag", image_id, name)
        return image_id

    def images(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self("images", "--format", "json").stdout)
        return listed


def _client_env(tmpdir: Path, registries_conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmpdir)
    env["CONTAINERS_REGISTRIES_CONF"] = str(registries_conf)
    # What `login` writes and every command reads, never the machine's own credentials; podman
    # wants the file to exist.
    auth_file = registries_conf.with_name("auth.json")
    if not auth_file.exists():
        auth_file.write_text('{"auths": {}}')
    env["REGISTRY_AUTH_FILE"] = str(auth_file)
    return env


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def skopeo_for(base: Path, registry_host: str, cert_dir: Path | None = None) -> Skopeo:
    """A Skopeo for registry_host under base; skips the test when skopeo is not installed."""
    if not have("skopeo"):
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    return Skopeo(base, registry_host, cert_dir)


@contextmanager
def podman_for(base: Path, registry_host: str, cert_dir: Path | None = None) -> Iterator[Podman]:
    """A Podman for registry_host under base; skips the test when podman is not installed."""
    if not have("podman"):
        pytest.skip("podman is not installed (apt-get install podman)")
    # podman wants a runroot of at most 50 characters, shorter than any tmp_path.
    with tempfile.TemporaryDirectory(prefix="e2e-podman-run-", dir="/tmp") as runroot:
        yield Podman(base, registry_host, Path(runroot), cert_dir)


# A small OCI client on httpx --------------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class OciClient:
    """Requests of the OCI distribution API, each checked for its success status."""

    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.http = client
        self.base = base_url

    def url(self, location: str) -> str:
        return location if location.startswith("http") else f"{self.base}{location}"

    def push_blob(self, repo: str, data: bytes) -> str:
        """A monolithic upload: POST ?digest= with the whole body."""
        digest = digest_of(data)
        response = self.http.post(
            f"{self.base}/v2/{repo}/blobs/uploads/",
            params={"digest": digest},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 201, (response.status_code, response.text)
        assert response.headers["Docker-Content-Digest"] == digest
        return digest

    def push_manifest(self, repo: str, reference: str, manifest: bytes, media_type: str) -> str:
        response = self.http.put(
            f"{self.base}/v2/{repo}/manifests/{reference}",
            content=manifest,
            headers={"Content-Type": media_type},
        )
        assert response.status_code == 201, (response.status_code, response.text)
        digest: str = response.headers["Docker-Content-Digest"]
        return digest

    def get_blob(self, repo: str, digest: str) -> httpx.Response:
        return self.http.get(f"{self.base}/v2/{repo}/blobs/{digest}")

    def tags(self, repo: str) -> list[str]:
        response = self.http.get(f"{self.base}/v2/{repo}/tags/list")
        assert response.status_code == 200, (response.status_code, response.text)
        tags: list[str] = response.json()["tags"]
        return tags
