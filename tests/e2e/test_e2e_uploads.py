"""Chunked uploads whose requests land on different worker processes, or on a restarted server.

An upload's bytes and offset live in storage and metadata, not in one worker's memory, so any
worker (and a restarted server) must be able to take the next chunk and the final PUT.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .clients import digest_of
from .conftest import ServerFactory
from .server import PortsideServer

pytestmark = pytest.mark.e2e

KiB = 1024


class Tracker:
    """Sends each request on a new connection (no keep-alive), so that the kernel hands each to
    whichever worker accepts first, and notes which worker process served it."""

    def __init__(self, server: PortsideServer) -> None:
        self.server = server
        self.client = httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
        self.served_by: list[int | None] = []

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with self.client.stream(method, url, **kwargs) as response:
            # The connection is open until the response is closed: find who holds its other end.
            client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
            self.served_by.append(self.server.worker_serving(client_port))
            response.read()
        return response

    def close(self) -> None:
        self.client.close()


def absolute(server: PortsideServer, location: str) -> str:
    return location if location.startswith("http") else f"{server.url}{location}"


def chunked_upload(client: Tracker, repo: str, data: bytes, parts: int) -> tuple[int | None, ...]:
    """POST, one PATCH per part but the last, PUT ?digest= with the last part, each on its own
    connection. Checks every status; returns the pids of the workers that served the PATCHes and
    the PUT."""
    server = client.server
    client.served_by.clear()
    started = client.request("POST", f"{server.url}/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = absolute(server, started.headers["location"])
    size = -(-len(data) // parts)
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    offset = 0
    for piece in pieces[:-1]:
        end = offset + len(piece) - 1
        patched = client.request(
            "PATCH",
            location,
            content=piece,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{end}",
            },
        )
        assert patched.status_code == 202, (patched.status_code, patched.text)
        assert patched.headers["range"] == f"0-{end}"
        offset = end + 1
        location = absolute(server, patched.headers["location"])
    finished = client.request(
        "PUT",
        location,
        params={"digest": digest_of(data)},
        content=pieces[-1],
        headers={"Content-Type": "application/octet-stream"},
    )
    assert finished.status_code == 201, (finished.status_code, finished.text)
    assert finished.headers["docker-content-digest"] == digest_of(data)
    return tuple(client.served_by[1:])


def test_chunked_uploads_complete_when_patch_and_put_reach_different_workers(
    portside_factory: ServerFactory,
) -> None:
    server = portside_factory(workers=2)
    workers = set(server.worker_pids())
    assert len(workers) == 2
    uploads: dict[str, tuple[str, bytes]] = {}
    spread: list[tuple[int | None, ...]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run(thread: int) -> None:
        client = Tracker(server)
        try:
            for number in range(12):
                data = os.urandom(64 * KiB + thread * 1000 + number)
                repo = f"e2e/spread-{thread}"
                served = chunked_upload(client, repo, data, parts=3)
                with lock:
                    uploads[digest_of(data)] = (repo, data)
                    spread.append(served)
        except BaseException as error:
            failures.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert not failures, failures
    assert len(uploads) == 48
    # The point of the test: in many uploads a PATCH and the PUT were served by different workers.
    crossed = [
        pids
        for pids in spread
        if pids[-1] is not None and any(p not in (None, pids[-1]) for p in pids[:-1])
    ]
    assert len(crossed) >= 10, f"only {len(crossed)} of {len(spread)} uploads crossed workers"
    assert {pid for pids in spread for pid in pids} - {None} == workers
    for digest, (repo, data) in uploads.items():
        response = httpx.get(f"{server.url}/v2/{repo}/blobs/{digest}")
        assert response.status_code == 200, (digest, response.status_code)
        assert response.content == data


def test_a_chunked_upload_survives_a_server_restart_between_patch_and_put(
    portside: PortsideServer,
) -> None:
    data = os.urandom(3 * 1024 * KiB + 17)
    half = len(data) // 2
    with httpx.Client(timeout=60) as client:
        started = client.post(f"{portside.url}/v2/e2e/restart/blobs/uploads/")
        assert started.status_code == 202
        location = absolute(portside, started.headers["location"])
        first = client.patch(
            location,
            content=data[:half],
            headers={"Content-Range": f"0-{half - 1}", "Content-Type": "application/octet-stream"},
        )
        assert first.status_code == 202
        assert first.headers["range"] == f"0-{half - 1}"
        location = absolute(portside, first.headers["location"])

    portside.restart()

    with httpx.Client(timeout=60) as client:
        status = client.get(location)
        assert status.status_code == 204
        assert status.headers["range"] == f"0-{half - 1}"
        rest = client.patch(
            location,
            content=data[half:],
            headers={
                "Content-Range": f"{half}-{len(data) - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert rest.status_code == 202, rest.text
        assert rest.headers["range"] == f"0-{len(data) - 1}"
        finished = client.put(
            absolute(portside, rest.headers["location"]), params={"digest": digest_of(data)}
        )
        assert finished.status_code == 201, finished.text
        assert finished.headers["docker-content-digest"] == digest_of(data)

        blob = client.get(f"{portside.url}/v2/e2e/restart/blobs/{digest_of(data)}")
        assert blob.status_code == 200
        assert blob.content == data


def trickle(data: bytes, pause: float) -> Iterator[bytes]:
    """data in 64 KiB pieces with a pause after each, so that the request stays in flight."""
    for start in range(0, len(data), 64 * KiB):
        yield data[start : start + 64 * KiB]
        time.sleep(pause)


def check_race_left_no_mix(server: PortsideServer, location: str, repo: str, winner: bytes) -> None:
    """The upload holds the winner's bytes only: the PUT stores them under their digest, the blob
    served matches it, and a later push of the same content elsewhere gets those bytes back."""
    digest = digest_of(winner)
    with httpx.Client(timeout=60) as client:
        finished = client.put(location, params={"digest": digest})
        assert finished.status_code == 201, finished.text
        blob = client.get(f"{server.url}/v2/{repo}/blobs/{digest}")
        assert blob.status_code == 200
        assert blob.content == winner
        # Someone else pushes the genuine content of that digest.
        pushed = client.post(
            f"{server.url}/v2/{repo}-victim/blobs/uploads/",
            params={"digest": digest},
            content=winner,
        )
        assert pushed.status_code == 201
        served = client.get(f"{server.url}/v2/{repo}-victim/blobs/{digest}")
        assert served.content == winner


def test_a_concurrent_patch_that_loses_the_race_leaves_no_bytes_in_the_blob(
    portside: PortsideServer,
) -> None:
    """Two PATCHes of one upload at the same offset: the one arriving while the other writes
    gets 416 at once and must leave nothing behind. (An early version kept writing the loser's
    bytes into the upload's file after the other's claim, so the PUT stored under the winner's
    digest bytes that did not hash to it, and every later push of the genuine bytes, to any
    repository, got 201 and the wrong bytes back.)"""
    size = 1024 * KiB
    genuine, other = os.urandom(size), os.urandom(size)
    with httpx.Client(timeout=60) as client:
        started = client.post(f"{portside.url}/v2/e2e/patch-race/blobs/uploads/")
        location = absolute(portside, started.headers["location"])
    slow_answer: list[httpx.Response] = []

    def slow_patch() -> None:
        with httpx.Client(timeout=60) as client:
            slow_answer.append(
                client.patch(
                    location,
                    content=trickle(genuine, 0.12),  # about 2 s in all
                    headers={"Content-Range": f"0-{size - 1}", "Content-Length": str(size)},
                )
            )

    thread = threading.Thread(target=slow_patch)
    thread.start()
    time.sleep(0.5)  # the slow PATCH is writing; this one starts at the same offset
    with httpx.Client(timeout=60) as client:
        began = time.monotonic()
        fast = client.patch(location, content=other, headers={"Content-Range": f"0-{size - 1}"})
        refused_after = time.monotonic() - began
    thread.join(30)
    assert fast.status_code == 416, fast.text
    assert refused_after < 1.0, "the second PATCH waited for the first instead of being refused"
    assert slow_answer[0].status_code == 202, slow_answer[0].text
    check_race_left_no_mix(portside, location, "e2e/patch-race", genuine)


class RawPatch:
    """A streamed PATCH over a socket of its own, so that the worker serving it is known
    before its body is sent."""

    def __init__(self, server: PortsideServer, location: str) -> None:
        self.socket = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.worker = server.worker_serving(self.socket.getsockname()[1])
        path = urlsplit(location).path
        self.send(
            f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )

    def send(self, data: bytes) -> None:
        # A refused request may be answered, and its connection closed, before its body is sent.
        with contextlib.suppress(OSError):
            self.socket.sendall(data)

    def chunk(self, data: bytes) -> None:
        self.send(b"%x\r\n%s\r\n" % (len(data), data))

    def status(self) -> int:
        """The response's status, once the body has ended."""
        self.send(b"0\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            answer += self.socket.recv(4096)
        self.socket.close()
        return int(answer.split()[1])


def test_two_patches_streaming_at_once_from_two_workers_never_mix_their_bytes(
    portside: PortsideServer,
) -> None:
    """Two streamed PATCHes of one upload in flight together, served by the two worker
    processes: one gets 202, the other 416, and the upload holds the winner's bytes only."""
    size = 512 * KiB
    with httpx.Client(timeout=60) as client:
        started = client.post(f"{portside.url}/v2/e2e/patch-pair/blobs/uploads/")
        location = absolute(portside, started.headers["location"])
    first = RawPatch(portside, location)
    second = RawPatch(portside, location)
    for _ in range(20):  # new connections until the kernel hands one to the other worker
        if None not in (first.worker, second.worker) and first.worker != second.worker:
            break
        second.socket.close()
        second = RawPatch(portside, location)
    assert None not in (first.worker, second.worker)
    assert first.worker != second.worker
    bodies = os.urandom(size), os.urandom(size)
    for start in range(0, size, 64 * KiB):
        first.chunk(bodies[0][start : start + 64 * KiB])
        second.chunk(bodies[1][start : start + 64 * KiB])
        time.sleep(0.02)
    statuses = first.status(), second.status()
    assert sorted(statuses) == [202, 416]
    check_race_left_no_mix(portside, location, "e2e/patch-pair", bodies[statuses.index(202)])
