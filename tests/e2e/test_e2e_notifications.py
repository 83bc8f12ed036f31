"""Notifications and the audit log with real processes: a receiver (receiver.py) that is stopped
for a while, a `portside serve` SIGKILLed with events pending, two instances on S3+PostgreSQL that
deliver each event once, and the audit log of a skopeo push, a delete and a failed login."""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from portside.auth.htpasswd import add_user
from postgres import schema
from s3 import S3Server

from .clients import OciClient, skopeo_for
from .conftest import SERVERS, ServerFactory
from .images import Layout
from .receiver import Receiver
from .server import PORTSIDE, PortsideServer, free_port

pytestmark = pytest.mark.e2e

SECRET = "e2e-signing-secret-0123"
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"


def endpoint(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {
        "name": "receiver",
        "url": receiver.url,
        "timeout": "2s",
        "threshold": 2,
        "backoff": "200ms",
        "secret": SECRET,
        **extra,
    }


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    found = Receiver(tmp_path / "receiver", free_port(), SECRET)
    found.start()
    yield found
    found.stop()


def push_image(oci: OciClient, repository: str, tag: str, layers: int = 2) -> str:
    """An image of random layers, pushed with plain requests; its manifest's digest."""
    config = oci.push_blob(repository, json.dumps({"tag": tag, "nonce": repr(object())}).encode())
    layer_digests = [
        oci.push_blob(repository, f"{tag}-{i}-{id(oci)}".encode()) for i in range(layers)
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config,
            "size": 1,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 1}
            for d in layer_digests
        ],
    }
    body = json.dumps(manifest).encode()
    return oci.push_manifest(repository, tag, body, manifest["mediaType"])


def manifest_pushes(events: list[dict[str, Any]]) -> set[str]:
    return {
        f"{e['target']['repository']}:{e['target']['tag']}"
        for e in events
        if e["action"] == "push" and "tag" in e["target"]
    }


def test_events_wait_for_a_stopped_receiver_and_survive_a_sigkill(
    portside_factory: ServerFactory, receiver: Receiver
) -> None:
    server = portside_factory(
        notifications={"endpoints": [endpoint(receiver, ignore={"actions": ["pull"]})]}
    )
    with httpx.Client(timeout=30) as http:
        oci = OciClient(http, server.url)
        push_image(oci, "team/app", "v1")
        delivered = receiver.wait_for(4)
        assert manifest_pushes(delivered) == {"team/app:v1"}
        assert {e["_content_type"] for e in delivered} == {EVENTS_MEDIA_TYPE}

        receiver.stop()
        push_image(oci, "team/app", "v2")  # 4 events that cannot be delivered
        server.kill()  # SIGKILL, with them pending

    receiver.start()
    server.start()
    # The dead holder's lease runs out (10s), then another process takes it and delivers.
    after = receiver.wait_for(8, timeout=40)
    assert manifest_pushes(after) == {"team/app:v1", "team/app:v2"}
    counted = Counter(e["id"] for e in after)
    assert len(counted) == 8  # every event; one sent twice across the kill keeps its id


@pytest.fixture
def pair(
    s3_server: S3Server,
    postgres_url: str,
    tmp_path: Path,
    receiver: Receiver,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[PortsideServer, PortsideServer]]:
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable at {PORTSIDE}")
    with schema(postgres_url) as database_url:
        shared = {
            **s3_server.portside_settings(),
            "database_url": database_url,
            "notifications": {"endpoints": [endpoint(receiver)]},
        }
        a = PortsideServer(tmp_path / "a", 2, shared)
        b = PortsideServer(tmp_path / "b", 2, shared)
        request.node.stash[SERVERS] = [a, b]
        threads = [threading.Thread(target=server.start) for server in (a, b)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            yield a, b
        finally:
            for server in (a, b):
                server.stop()


def test_two_instances_deliver_each_event_once(
    pair: tuple[PortsideServer, PortsideServer], receiver: Receiver
) -> None:
    with httpx.Client(timeout=60, follow_redirects=True) as http:
        for i in range(6):
            oci = OciClient(http, pair[i % 2].url)
            push_image(oci, f"scale/app{i % 3}", f"v{i}", layers=1)
            oci.get_blob(f"scale/app{i % 3}", oci.push_blob(f"scale/app{i % 3}", b"pulled"))

    expected = 6 * 3 + 6 * 2  # per image: config, layer, manifest; then a blob pushed and pulled
    events = receiver.wait_for(expected, timeout=30)
    counted = Counter(e["id"] for e in events)
    assert len(counted) == expected
    assert max(counted.values()) == 1, "an event arrived twice without a crash"
    assert manifest_pushes(events) == {f"scale/app{i % 3}:v{i}" for i in range(6)}
    instances = {e["source"]["instanceID"] for e in events}
    assert len(instances) >= 2  # recorded by the workers of both instances, sent by one


def test_skopeo_push_delete_and_a_failed_login_are_audited(
    tmp_path: Path, portside_factory: ServerFactory
) -> None:
    htpasswd = tmp_path / "htpasswd"
    add_user(htpasswd, "alice", "alice-Secret-1", rounds=4)
    access = {"rules": [{"repositories": ["*"], "users": ["alice"], "actions": ["*"]}]}
    server = portside_factory(
        auth={"htpasswd": {"path": str(htpasswd)}, "access": access}, audit={"retention": "7d"}
    )
    skopeo = skopeo_for(tmp_path / "skopeo", server.host)
    source = Layout(tmp_path / "source")
    image = source.add_image([1024, 2048], tag="v1")
    creds = "alice:alice-Secret-1"

    skopeo.copy(source.ref("v1"), f"docker://{server.host}/team/app:v1", "--dest-creds", creds)
    digest = image.manifest.digest
    skopeo(
        "delete",
        "--tls-verify=false",
        "--creds",
        creds,
        f"docker://{server.host}/team/app@{digest}",
    )
    refused = httpx.get(f"{server.url}/v2/", auth=("alice", "not-her-password"))
    assert refused.status_code == 401

    def audit(*arguments: str) -> list[dict[str, Any]]:
        command = [str(PORTSIDE), "audit", "--config", str(server.config_path), "--flavor", "e2e"]
        result = subprocess.run(
            [*command, "--json", *arguments], capture_output=True, text=True, check=True
        )
        return [json.loads(line) for line in result.stdout.splitlines()]

    pushed = audit("--action", "push")
    assert [(e["user"], e["address"], e["repository"], e["tag"]) for e in pushed] == [
        ("alice", "127.0.0.1", "team/app", "v1")
    ]
    deleted = audit("--action", "delete", "--repository", "team/app")
    assert [(e["user"], e["address"], e["digest"]) for e in deleted] == [
        ("alice", "127.0.0.1", digest)
    ]
    # A failed login is buffered: written within a second.
    for _ in range(50):
        if failed := audit("--action", "login-failed"):
            break
        threading.Event().wait(0.1)
    assert [(e["user"], e["address"]) for e in failed] == [("alice", "127.0.0.1")]
