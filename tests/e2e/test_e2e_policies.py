"""Keeping the registry in shape, against real `portside serve` processes and the real clients:
an immutable tag skopeo and podman cannot overwrite or delete; retention keeping the last 3 of 10
tags, all of which still pull; a namespace at its quota refusing a push with the usage and the
limit until a delete and a collection; a robot token within and outside its scope, revoked on
both of two instances sharing S3 and PostgreSQL; a repository deleted and collected while
another sharing its layers still pulls."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from portside.auth.htpasswd import Scheme, add_user
from postgres import schema
from s3 import S3Server

from .clients import Podman, Skopeo, podman_for, skopeo_for
from .conftest import SERVERS, ServerFactory
from .images import (
    Descriptor,
    Image,
    Layout,
    tagged_digest,
    verify_layout_blobs,
)
from .server import FLAVOR, PORTSIDE, PortsideServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KiB = 1024
Base = tuple[Descriptor, str]  # a layer and its diff_id


def portside(
    server: PortsideServer, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A `portside` command on the server's config, as an operator runs it next to the service."""
    command = [str(PORTSIDE), *args, "--config", str(server.config_path), "--flavor", FLAVOR]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def based_image(layout: Layout, tag: str, base: Base, size: int = 8 * KiB) -> Image:
    """An image of two layers: base, which the layout's other images share, and its own."""
    return layout.add_based_image(tag, base, size)


def pull_intact(skopeo: Skopeo, reference: str, tmp: Path, image: Image) -> None:
    """skopeo pulls reference into a layout: the same manifest, every blob byte for byte."""
    pulled = tmp / f"pulled-{time.monotonic_ns()}"
    skopeo.copy(reference, f"oci:{pulled}:x")
    assert tagged_digest(pulled, "x") == image.manifest.digest
    on_disk = verify_layout_blobs(pulled)
    for blob in [image.manifest, *image.blobs]:
        assert on_disk.get(blob.digest) == blob.size, f"{reference}: {blob.digest}"


def push(skopeo: Skopeo, layout: Layout, tag: str, reference: str, check: bool = True) -> Any:
    return skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        "--retry-times=0",
        layout.ref(tag),
        reference,
        check=check,
    )


def test_an_immutable_tag_is_neither_overwritten_nor_deleted(
    tmp_path: Path, portside_factory: ServerFactory
) -> None:
    rule = {"name": "releases", "repositories": ["e2e/*"], "tags": ["v*"]}
    server = portside_factory(policies={"immutable_tags": [rule]})
    skopeo = skopeo_for(tmp_path / "skopeo", server.host)
    layout = Layout(tmp_path / "layout")
    first = layout.add_image([4 * KiB], tag="v1.0")
    layout.add_image([4 * KiB], tag="other")
    target = f"docker://{server.host}/e2e/app"
    push(skopeo, layout, "v1.0", f"{target}:v1.0")

    overwrite = push(skopeo, layout, "other", f"{target}:v1.0", check=False)
    deleted = skopeo("delete", "--tls-verify=false", f"{target}:v1.0", check=False)
    with podman_for(tmp_path / "podman", server.host) as podman:
        podman.load(layout.ref("other"), f"{server.host}/e2e/app:v1.0")
        podman_push = podman(
            "push", "--tls-verify=false", f"{server.host}/e2e/app:v1.0", check=False
        )

    for refused in (overwrite, deleted, podman_push):
        assert refused.returncode != 0
        assert "tag v1.0 of e2e/app is immutable (rule releases)" in refused.stderr, refused.stderr
    pull_intact(skopeo, f"{target}:v1.0", tmp_path, first)
    push(skopeo, layout, "other", f"{target}:latest")  # other tags move as ever
    push(skopeo, layout, "v1.0", f"{target}:latest")


def test_retention_keeps_the_last_3_of_10_tags_and_they_all_pull(
    tmp_path: Path, portside_factory: ServerFactory
) -> None:
    rule = {"name": "ci", "repositories": ["e2e/*"], "keep_last": 3}
    server = portside_factory(policies={"retention": [rule]}, audit={"retention": "1d"})
    skopeo = skopeo_for(tmp_path / "skopeo", server.host)
    layout = Layout(tmp_path / "layout")
    base = layout.add_layer(64 * KiB)
    images = [based_image(layout, f"build-{n}", base) for n in range(10)]
    for n in range(10):
        push(skopeo, layout, f"build-{n}", f"docker://{server.host}/e2e/ci:build-{n}")

    dry = portside(server, "retention", "--dry-run")
    assert "would remove 7 tag(s)" in dry.stdout, dry.stdout
    assert set(skopeo.list_tags(f"docker://{server.host}/e2e/ci")) == {
        f"build-{n}" for n in range(10)
    }
    portside(server, "gc", "--grace-period", "0")

    tags = skopeo.list_tags(f"docker://{server.host}/e2e/ci")
    assert sorted(tags) == ["build-7", "build-8", "build-9"]
    for n in (7, 8, 9):
        pull_intact(skopeo, f"docker://{server.host}/e2e/ci:build-{n}", tmp_path, images[n])
    with podman_for(tmp_path / "podman", server.host) as podman:
        podman("pull", "--tls-verify=false", f"{server.host}/e2e/ci:build-9")
    for n in range(7):  # their own layers and manifests are gone; the shared base stays
        assert not server.stored_blob(images[n].layers[1].digest).exists()
        assert not server.stored_blob(images[n].manifest.digest).exists()
    assert server.stored_blob(base[0].digest).is_file()
    audit = portside(server, "audit", "--action", "retention-delete", "--json")
    assert audit.stdout.count("retention-delete") >= 7


def test_a_namespace_at_its_quota_refuses_a_push_until_a_delete_and_a_collection(
    tmp_path: Path, portside_factory: ServerFactory
) -> None:
    quota = {"name": "team-quota", "namespaces": ["e2e"], "max_bytes": "150KiB"}
    server = portside_factory(policies={"quotas": [quota]})
    skopeo = skopeo_for(tmp_path / "skopeo", server.host)
    layout = Layout(tmp_path / "layout")
    old = layout.add_image([100 * KiB], tag="old")
    new = layout.add_image([100 * KiB], tag="new")
    push(skopeo, layout, "old", f"docker://{server.host}/e2e/app:old")

    refused = push(skopeo, layout, "new", f"docker://{server.host}/e2e/app:new", check=False)
    with podman_for(tmp_path / "podman", server.host) as podman:
        podman.load(layout.ref("new"), f"{server.host}/e2e/other:new")
        podman_refused = podman(
            "push", "--tls-verify=false", f"{server.host}/e2e/other:new", check=False
        )
    usage = portside(server, "quota").stdout

    for attempt in (refused, podman_refused):
        assert attempt.returncode != 0
        assert "quota exceeded for namespace e2e (rule team-quota)" in attempt.stderr, (
            attempt.stderr
        )
        assert "of 153,600 bytes used" in attempt.stderr
    assert "team-quota" in usage
    assert "153,600" in usage

    skopeo("delete", "--tls-verify=false", f"docker://{server.host}/e2e/app:old")
    portside(server, "gc", "--grace-period", "0")
    push(skopeo, layout, "new", f"docker://{server.host}/e2e/app:new")
    pull_intact(skopeo, f"docker://{server.host}/e2e/app:new", tmp_path, new)
    assert old.manifest.digest != new.manifest.digest


def test_a_deleted_repository_is_collected_while_one_sharing_its_layers_still_pulls(
    tmp_path: Path, portside_factory: ServerFactory
) -> None:
    server = portside_factory()
    skopeo = skopeo_for(tmp_path / "skopeo", server.host)
    layout = Layout(tmp_path / "layout")
    base = layout.add_layer(64 * KiB)
    doomed = based_image(layout, "doomed", base)
    kept = based_image(layout, "kept", base)
    push(skopeo, layout, "doomed", f"docker://{server.host}/e2e/doomed:v1")
    push(skopeo, layout, "kept", f"docker://{server.host}/e2e/kept:v1")
    own = [doomed.manifest, doomed.config, doomed.layers[1]]
    assert all(server.stored_blob(blob.digest).is_file() for blob in own)

    deleted = portside(server, "repo", "delete", "e2e/doomed", "--yes")
    portside(server, "gc", "--grace-period", "0")

    assert "deleted e2e/doomed: 1 manifest(s), 1 tag(s)" in deleted.stdout
    for blob in own:
        assert not server.stored_blob(blob.digest).exists(), blob.digest
    pull_intact(skopeo, f"docker://{server.host}/e2e/kept:v1", tmp_path, kept)
    listed = httpx.get(f"{server.url}/v2/e2e/doomed/tags/list", timeout=30)
    assert listed.status_code == 404


# Robot tokens on two instances sharing S3 and PostgreSQL ---------------------------------------

ROBOT_ACCESS = {"rules": [{"repositories": ["*"], "users": ["admin"], "actions": ["*"]}]}


@pytest.fixture
def pair(
    tmp_path: Path, s3_server: S3Server, postgres_url: str, request: pytest.FixtureRequest
) -> Iterator[tuple[PortsideServer, PortsideServer]]:
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable at {PORTSIDE}")
    htpasswd = tmp_path / "htpasswd"
    add_user(htpasswd, "admin", "admin-Secret-1", scheme=Scheme.BCRYPT, rounds=4)
    with schema(postgres_url) as database_url:
        shared = {
            **s3_server.portside_settings(),
            "database_url": database_url,
            "auth": {
                "htpasswd": {"path": str(htpasswd)},
                "access": ROBOT_ACCESS,
                "token": {"service": "portside-e2e", "key_path": str(tmp_path / "token.pem")},
            },
        }
        a = PortsideServer(tmp_path / "a", 1, shared)
        b = PortsideServer(tmp_path / "b", 1, shared)
        request.node.stash[SERVERS] = [a, b]
        try:
            a.start()
            b.start()
            yield a, b
        finally:
            for server in (a, b):
                server.stop()


def login(podman: Podman, host: str, user: str, secret: str) -> subprocess.CompletedProcess[str]:
    return podman(
        "login", "--tls-verify=false", "--username", user, "--password", secret, host, check=False
    )


def test_a_robot_token_works_within_its_scope_until_revoked_on_both_instances(
    tmp_path: Path, pair: tuple[PortsideServer, PortsideServer]
) -> None:
    a, b = pair
    created = portside(
        a,
        "token",
        "create",
        "--name",
        "ci-app",
        "--scope",
        "repository:team/app:pull,push",
        "--expires",
        "90d",
    )
    secret = created.stdout.strip()
    assert secret.startswith("psrt_")
    layout = Layout(tmp_path / "layout")
    layout.add_image([16 * KiB], tag="v1")
    with podman_for(tmp_path / "podman", a.host) as podman:
        for server in pair:
            assert login(podman, server.host, "robot$ci-app", secret).returncode == 0
        podman.load(layout.ref("v1"), f"{a.host}/team/app:v1")
        podman("push", "--tls-verify=false", f"{a.host}/team/app:v1")
        podman("tag", f"{a.host}/team/app:v1", f"{a.host}/team/other:v1")
        outside = podman("push", "--tls-verify=false", f"{a.host}/team/other:v1", check=False)
        assert outside.returncode != 0
        skopeo = skopeo_for(tmp_path / "skopeo", b.host)
        creds = f"--creds=robot$ci-app:{secret}"
        pulled = tmp_path / "pulled"
        skopeo.copy(f"docker://{b.host}/team/app:v1", f"oci:{pulled}:v1", f"--src-{creds[2:]}")
        verify_layout_blobs(pulled)  # podman converted the image it pushed: new digests
        listed = portside(a, "token", "list").stdout
        assert "robot$ci-app" in listed
        assert "repository:team/app:pull,push" in listed

        portside(b, "token", "revoke", "ci-app")
        time.sleep(2)  # each process looks a robot up at most once a second

        for server in pair:
            pull = podman("pull", "--tls-verify=false", f"{server.host}/team/app:v1", check=False)
            assert pull.returncode != 0, server.host
            refused = skopeo(
                "inspect",
                "--tls-verify=false",
                creds,
                f"docker://{server.host}/team/app:v1",
                check=False,
            )
            assert refused.returncode != 0, server.host
            assert login(podman, server.host, "robot$ci-app", secret).returncode != 0
