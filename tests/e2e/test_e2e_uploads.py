"""Chunked uploads whose requests land on different worker processes, or on a restarted server.

An upload's bytes and offset live in storage and metadata, not in one worker's memory, so any
worker (and a restarted server) must be able to take the next chunk and the final PUT.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

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


def test_a_concurrent_patch_that_loses_the_race_leaves_no_bytes_in_the_blob(
    portside: PortsideServer,
) -> None:
    """Two PATCHes of one upload at the same offset: the one that loses gets 416 and must leave
    nothing behind. (Before the fix it kept writing into the upload's file after the other's
    claim, so the PUT stored under the winner's digest bytes that did not hash to it, and every
    later push of the genuine bytes, to any repository, got 201 and the wrong bytes back.)"""
    size = 1024 * KiB
    genuine, other = os.urandom(size), os.urandom(size)
    digest = digest_of(genuine)
    with httpx.Client(timeout=60) as client:
        started = client.post(f"{portside.url}/v2/e2e/patch-race/blobs/uploads/")
        location = absolute(portside, started.headers["location"])
    slow_answer: list[httpx.Response] = []

    def slow_patch() -> None:
        def trickle() -> Iterator[bytes]:
            for start in range(0, size, 64 * KiB):
                yield other[start : start + 64 * KiB]
                time.sleep(0.12)  # about 2 s in all

        with httpx.Client(timeout=60) as client:
            slow_answer.append(
                client.patch(
                    location,
                    content=trickle(),
                    headers={"Content-Range": f"0-{size - 1}", "Content-Length": str(size)},
                )
            )

    thread = threading.Thread(target=slow_patch)
    thread.start()
    time.sleep(0.5)  # the slow PATCH is writing; this one starts at the same offset and wins
    with httpx.Client(timeout=60) as client:
        fast = client.patch(location, content=genuine, headers={"Content-Range": f"0-{size - 1}"})
    thread.join(30)
    assert fast.status_code == 202
    assert slow_answer[0].status_code == 416

    with httpx.Client(timeout=60) as client:
        finished = client.put(location, params={"digest": digest})
        assert finished.status_code in (201, 400)
        blob = client.get(f"{portside.url}/v2/e2e/patch-race/blobs/{digest}")
        assert blob.status_code in (200, 404)
        if blob.status_code == 200:
            assert digest_of(blob.content) == digest, "the registry serves bytes not matching"
        # Someone else pushes the genuine content of that digest.
        pushed = client.post(
            f"{portside.url}/v2/e2e/patch-race-victim/blobs/uploads/",
            params={"digest": digest},
            content=genuine,
        )
        assert pushed.status_code == 201
        served = client.get(f"{portside.url}/v2/e2e/patch-race-victim/blobs/{digest}")
        assert digest_of(served.content) == digest
