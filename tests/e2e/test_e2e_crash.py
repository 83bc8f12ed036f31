"""SIGKILL of the whole server (granian parent and workers) with pushes in flight, then a restart on
the same storage: what was acknowledged is intact, nothing partial is visible, and the server works.

Client threads push without pause: monolithic uploads (POST ?digest=), chunked uploads (POST, PATCH
with Content-Range, PUT ?digest=) and image manifests under new tags. Request bodies trickle in,
so requests are mid-body when the kill comes. Every success response is written in a ledger; after
the restart the ledger is checked against what the registry serves.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from .clients import OciClient, digest_of
from .conftest import ServerFactory
from .images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from .server import PortsideServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KiB = 1024
MiB = 1024 * KiB
PIECE = 64 * KiB


def trickle(data: bytes, pause: float = 0.002) -> Iterator[bytes]:
    """The body in 64 KiB pieces with a pause between them, so it spends time in flight."""
    for start in range(0, len(data), PIECE):
        yield data[start : start + PIECE]
        time.sleep(pause)


@dataclass
class Session:
    """A chunked upload the server has acknowledged starting (202 to the POST)."""

    repo: str
    url: str
    data: bytes
    acked_offset: int = 0
    put_sent: bool = False


@dataclass
class Ledger:
    killing: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # digest → (repo, size), for blobs whose upload got 201
    acked_blobs: dict[str, tuple[str, int]] = field(default_factory=dict)
    # digest → (repo, size), for blobs whose upload was sent but never got 201
    tried_blobs: dict[str, tuple[str, int]] = field(default_factory=dict)
    # (repo, tag) → manifest digest, for manifest PUTs that got 201
    acked_tags: dict[tuple[str, str], str] = field(default_factory=dict)
    # (repo, tag) → manifest digest, for manifest PUTs sent without a 201
    tried_tags: dict[tuple[str, str], str] = field(default_factory=dict)
    # chunked uploads started but not finished with a 201
    sessions: list[Session] = field(default_factory=list)
    # anything unexpected: an error status, or a transport error before the kill
    unexpected: list[str] = field(default_factory=list)

    def tried(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        with self.lock:
            self.tried_blobs[digest] = (repo, len(data))
        return digest

    def acked(self, digest: str) -> None:
        with self.lock:
            self.acked_blobs[digest] = self.tried_blobs.pop(digest)

    def count(self) -> tuple[int, int]:
        with self.lock:
            return len(self.acked_blobs), len(self.acked_tags)


class Unexpected(Exception):
    pass


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise Unexpected(
            f"{response.request.method} {response.request.url} → {response.status_code} "
            f"(wanted {status}): {response.text[:300]}"
        )
    return response


def absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else f"{base}{location}"


def push_monolithic(client: httpx.Client, base: str, ledger: Ledger, repo: str, data: bytes) -> str:
    digest = ledger.tried(repo, data)
    headers = {"Content-Type": "application/octet-stream"}
    if random.random() < 0.5:  # half with Content-Length, half chunked transfer encoding
        headers["Content-Length"] = str(len(data))
    response = client.post(
        f"{base}/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=trickle(data),
        headers=headers,
    )
    expect(response, 201)
    ledger.acked(digest)
    return digest


def push_chunked(client: httpx.Client, base: str, ledger: Ledger, repo: str, data: bytes) -> None:
    digest = ledger.tried(repo, data)
    started = expect(client.post(f"{base}/v2/{repo}/blobs/uploads/"), 202)
    session = Session(repo, absolute(base, started.headers["location"]), data)
    with ledger.lock:
        ledger.sessions.append(session)
    chunk = random.choice([128, 256, 512]) * KiB
    for offset in range(0, len(data), chunk):
        piece = data[offset : offset + chunk]
        end = offset + len(piece) - 1
        patched = client.patch(
            session.url,
            content=trickle(piece),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{end}",
                "Content-Length": str(len(piece)),
            },
        )
        expect(patched, 202)
        if patched.headers.get("range") != f"0-{end}":
            raise Unexpected(f"PATCH {offset}-{end} answered Range {patched.headers.get('range')}")
        session.acked_offset = end + 1
        session.url = absolute(base, patched.headers["location"])
    session.put_sent = True
    expect(client.put(session.url, params={"digest": digest}), 201)
    with ledger.lock:
        ledger.sessions.remove(session)
    ledger.acked(digest)


def push_image(client: httpx.Client, base: str, ledger: Ledger, repo: str, tag: str) -> None:
    layer = push_monolithic(
        client, base, ledger, repo, os.urandom(random.randint(16 * KiB, 256 * KiB))
    )
    layer_size = ledger.acked_blobs[layer][1]
    config_bytes = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"nonce": os.urandom(8).hex()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    config = push_monolithic(client, base, ledger, repo, config_bytes)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config, "size": len(config_bytes)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": layer_size}],
        }
    ).encode()
    with ledger.lock:
        ledger.tried_tags[(repo, tag)] = digest_of(manifest)
    response = client.put(
        f"{base}/v2/{repo}/manifests/{tag}",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    expect(response, 201)
    if response.headers.get("docker-content-digest") != digest_of(manifest):
        raise Unexpected(f"manifest PUT answered digest {response.headers}")
    with ledger.lock:
        ledger.acked_tags[(repo, tag)] = ledger.tried_tags.pop((repo, tag))


def pusher(base: str, ledger: Ledger, name: str, push: Callable[[httpx.Client, int], None]) -> None:
    """Pushes until the server dies; a failure before the kill goes in ledger.unexpected."""
    with httpx.Client(timeout=30) as client:
        number = 0
        while not ledger.killing.is_set():
            try:
                push(client, number)
            except httpx.TransportError as error:
                if not ledger.killing.is_set():
                    ledger.unexpected.append(f"{name}: {error!r} before the kill")
                return
            except Unexpected as error:
                ledger.unexpected.append(f"{name}: {error}")
                return
            number += 1


def start_pushers(server: PortsideServer, ledger: Ledger) -> list[threading.Thread]:
    base = server.url

    def mono(index: int) -> Callable[[httpx.Client, int], None]:
        def push(client: httpx.Client, _: int) -> None:
            data = os.urandom(random.randint(32 * KiB, 2 * MiB))
            push_monolithic(client, base, ledger, f"crash/mono-{index}", data)

        return push

    def chunked(index: int) -> Callable[[httpx.Client, int], None]:
        def push(client: httpx.Client, _: int) -> None:
            data = os.urandom(random.randint(MiB, 3 * MiB))
            push_chunked(client, base, ledger, f"crash/chunked-{index}", data)

        return push

    def images(index: int) -> Callable[[httpx.Client, int], None]:
        def push(client: httpx.Client, number: int) -> None:
            push_image(client, base, ledger, f"crash/images-{index}", f"t{number}")

        return push

    pushes = {"mono-0": mono(0), "mono-1": mono(1), "chunked-0": chunked(0)}
    pushes |= {"chunked-1": chunked(1), "images-0": images(0), "images-1": images(1)}
    threads = [
        threading.Thread(target=pusher, args=(base, ledger, name, push), name=name, daemon=True)
        for name, push in pushes.items()
    ]
    for thread in threads:
        thread.start()
    return threads


def test_sigkill_mid_push_keeps_every_acknowledged_blob_and_tag_and_shows_no_partial_blob(
    portside_factory: ServerFactory,
) -> None:
    server = portside_factory(workers=2)
    ledger = Ledger()
    threads = start_pushers(server, ledger)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ledger.unexpected:
        acked_blobs, acked_tags = ledger.count()
        if acked_blobs >= 20 and acked_tags >= 4 and len(ledger.sessions) >= 1:
            break
        time.sleep(0.05)
    time.sleep(random.uniform(0.05, 0.3))
    ledger.killing.set()
    server.kill()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), f"{thread.name} still pushing after the kill"

    assert not ledger.unexpected, ledger.unexpected
    assert len(ledger.acked_blobs) >= 20
    assert len(ledger.acked_tags) >= 4
    in_flight = len(ledger.tried_blobs) + len(ledger.tried_tags)
    assert in_flight >= 1, "nothing was in flight at the kill: the test proved nothing"

    server.start()

    with httpx.Client(base_url=server.url, timeout=60) as client:
        # Every acknowledged blob is there, whole.
        for digest, (repo, size) in ledger.acked_blobs.items():
            response = client.get(f"/v2/{repo}/blobs/{digest}")
            assert response.status_code == 200, f"acknowledged blob {digest} in {repo} lost"
            assert len(response.content) == size
            assert digest_of(response.content) == digest, f"acknowledged blob {digest} corrupt"

        # A blob whose upload got no 201 is absent, or complete (the kill came after the server
        # finished it but before the client read the answer); never partial.
        present_unacked = 0
        for digest, (repo, size) in ledger.tried_blobs.items():
            head = client.head(f"/v2/{repo}/blobs/{digest}")
            response = client.get(f"/v2/{repo}/blobs/{digest}")
            assert head.status_code == response.status_code
            assert response.status_code in (200, 404), (digest, response.status_code)
            if response.status_code == 200:
                present_unacked += 1
                assert int(head.headers["content-length"]) == size
                assert digest_of(response.content) == digest, f"partial blob {digest} visible"

        # Every acknowledged tag is listed and names its manifest; an unacknowledged tag is
        # absent or names the manifest that was sent.
        for repo in {repo for repo, _ in ledger.acked_tags}:
            listed = client.get(f"/v2/{repo}/tags/list")
            assert listed.status_code == 200
            tags = set(listed.json()["tags"])
            acked = {tag for r, tag in ledger.acked_tags if r == repo}
            assert acked <= tags, f"acknowledged tags lost in {repo}: {acked - tags}"
        for (repo, tag), digest in ledger.acked_tags.items():
            response = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert response.status_code == 200, (repo, tag, response.status_code)
            assert response.headers["docker-content-digest"] == digest
            assert digest_of(response.content) == digest
        for (repo, tag), digest in ledger.tried_tags.items():
            response = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert response.status_code in (200, 404), (repo, tag, response.status_code)
            if response.status_code == 200:
                assert digest_of(response.content) == digest

        # Chunked uploads cut short: the registry still knows every one it acknowledged, with at
        # least the acknowledged bytes (test_every_chunk_acknowledged_... below resumes them).
        for session in ledger.sessions:
            check_session_kept(client, session)
            # Whatever became of the session, the blob can be pushed again.
            oci_blob = OciClient(client, server.url).push_blob(session.repo, session.data)
            assert client.get(f"/v2/{session.repo}/blobs/{oci_blob}").content == session.data

        # And the server works as before: a new image, and a blob whose upload was cut short.
        oci = OciClient(client, server.url)
        layer = oci.push_blob("crash/after", os.urandom(300 * KiB))
        config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        config_digest = oci.push_blob("crash/after", config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": 300 * KiB}],
            }
        ).encode()
        assert oci.push_manifest("crash/after", "v1", manifest, OCI_MANIFEST) == digest_of(manifest)
        assert oci.tags("crash/after") == ["v1"]
        catalog = client.get("/v2/_catalog").json()["repositories"]
        assert "crash/after" in catalog
        assert {repo for repo, _ in ledger.acked_tags} <= set(catalog)

    print(
        f"at the kill: {len(ledger.acked_blobs)} blobs and {len(ledger.acked_tags)} tags "
        f"acknowledged; {len(ledger.tried_blobs)} blobs ({present_unacked} of them complete "
        f"anyway), {len(ledger.tried_tags)} tags and {len(ledger.sessions)} chunked uploads "
        "in flight"
    )
    statuses = [line.status for line in server.access_lines()]
    assert 500 not in statuses, "a request failed with 500"


def check_session_kept(client: httpx.Client, session: Session) -> int | None:
    """The upload's offset as the registry reports it after the restart: at least what was
    acknowledged. None when the upload is gone, which only a finished upload may be."""
    status = client.get(session.url)
    if status.status_code == 404:
        # Only an upload whose final PUT was in flight may be gone, and then its blob is whole.
        assert session.put_sent, f"upload {session.url} lost after {session.acked_offset} bytes"
        blob = client.get(f"/v2/{session.repo}/blobs/{digest_of(session.data)}")
        assert blob.status_code == 200
        assert blob.content == session.data
        return None
    assert status.status_code == 204, (status.status_code, status.text)
    end = int(status.headers["range"].partition("-")[2])
    offset = 0 if end == 0 else end + 1  # "0-0" is an empty upload: our chunks are larger
    assert session.acked_offset <= offset <= len(session.data), (session.acked_offset, offset)
    return offset


def resume_upload(client: httpx.Client, session: Session) -> None:
    """Send the rest of an upload from the offset the registry reports, then PUT; check the blob."""
    offset = check_session_kept(client, session)
    if offset is None:
        return
    url = session.url
    if offset < len(session.data):
        patched = client.patch(
            url,
            content=session.data[offset:],
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{len(session.data) - 1}",
            },
        )
        assert patched.status_code == 202, (patched.status_code, patched.text)
        url = absolute(str(client.base_url).rstrip("/"), patched.headers["location"])
    finished = client.put(url, params={"digest": digest_of(session.data)})
    assert finished.status_code == 201, (finished.status_code, finished.text)
    blob = client.get(f"/v2/{session.repo}/blobs/{digest_of(session.data)}")
    assert blob.status_code == 200
    assert blob.content == session.data


ROUNDS = 3


def test_every_chunk_acknowledged_before_a_sigkill_is_kept_and_the_upload_resumes(
    portside_factory: ServerFactory,
) -> None:
    """Chunked uploads of 4 MiB PATCHes, killed mid-way, in several rounds: after each restart
    every upload reports an offset at least as far as its acknowledged chunks, takes the rest
    from there and ends with the right blob. No final PUT is in flight at a kill: each upload is
    far from its end."""
    server = portside_factory(workers=2)
    for round_number in range(ROUNDS):
        if round_number:
            server.start()
        sessions = kill_during_chunked_uploads(server, f"crash/resume-{round_number}")
        server.start()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for session in sessions:
                resume_upload(client, session)
        server.stop()


def kill_during_chunked_uploads(server: PortsideServer, repo: str) -> list[Session]:
    """Four chunked uploads of 64 MiB in 4 MiB PATCHes; SIGKILL once all are under way."""
    ledger = Ledger()
    chunk = 4 * MiB

    def upload(index: int) -> None:
        data = os.urandom(16 * chunk)
        with httpx.Client(timeout=30) as client:
            try:
                started = expect(client.post(f"{server.url}/v2/{repo}/blobs/uploads/"), 202)
                session = Session(repo, absolute(server.url, started.headers["location"]), data)
                with ledger.lock:
                    ledger.sessions.append(session)
                for offset in range(0, len(data), chunk):
                    end = offset + chunk - 1
                    patched = client.patch(
                        session.url,
                        content=data[offset : end + 1],
                        headers={"Content-Range": f"{offset}-{end}"},
                    )
                    expect(patched, 202)
                    session.acked_offset = end + 1
            except httpx.TransportError as error:
                if not ledger.killing.is_set():
                    ledger.unexpected.append(f"upload {index}: {error!r} before the kill")
            except Unexpected as error:
                ledger.unexpected.append(str(error))

    threads = [threading.Thread(target=upload, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not ledger.unexpected:
        with ledger.lock:
            acked = [session.acked_offset for session in ledger.sessions]
            if len(acked) == 4 and (min(acked) >= 2 * chunk or max(acked) >= 10 * chunk):
                break
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.05))
    ledger.killing.set()
    server.kill()
    for thread in threads:
        thread.join(60)
    assert not ledger.unexpected, ledger.unexpected
    assert len(ledger.sessions) == 4
    assert any(s.acked_offset < len(s.data) for s in ledger.sessions), "all done before the kill"
    return ledger.sessions
