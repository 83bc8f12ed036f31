"""Health of a running `portside serve` with two workers: a drain file takes it out of a load
balancer (every worker's /readyz answers 503) while an upload in flight goes on to the end, and
the metrics show that upload in progress until it is done."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ServerFactory
from .server import PortsideServer

pytestmark = pytest.mark.e2e

KiB = 1024
UPLOADS_IN_PROGRESS = "portside_uploads_in_progress "


def slow_body(data: bytes, halfway: threading.Event) -> Iterator[bytes]:
    """data in 64 KiB pieces, 0.1 s apart (about 3 s in all); halfway set in the middle."""
    pieces = [data[start : start + 64 * KiB] for start in range(0, len(data), 64 * KiB)]
    for index, piece in enumerate(pieces):
        if index == len(pieces) // 2:
            halfway.set()
        yield piece
        time.sleep(0.1)


def fresh_get(server: PortsideServer, path: str) -> httpx.Response:
    """On a connection of its own, so that the requests spread over the workers."""
    with httpx.Client(timeout=30) as client:
        return client.get(f"{server.url}{path}", headers={"Connection": "close"})


def uploads_in_progress(server: PortsideServer) -> float:
    text = fresh_get(server, "/metrics").text
    line = next(line for line in text.splitlines() if line.startswith(UPLOADS_IN_PROGRESS))
    return float(line.removeprefix(UPLOADS_IN_PROGRESS))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_a_drain_file_turns_readyz_503_while_an_upload_in_flight_completes(
    portside_factory: ServerFactory, tmp_path: Path
) -> None:
    drain = tmp_path / "drain"
    server = portside_factory(health={"drain_file": str(drain)})
    data = os.urandom(2048 * KiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(timeout=60) as client:
        started = client.post(f"{server.url}/v2/e2e/drained/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = f"{server.url}{started.headers['location']}"
    halfway = threading.Event()
    answers: list[httpx.Response] = []

    def patch() -> None:
        with httpx.Client(timeout=60) as client:
            answers.append(client.patch(location, content=slow_body(data, halfway)))

    uploading = threading.Thread(target=patch)
    uploading.start()
    assert halfway.wait(30)
    drain.touch()

    # Every worker reads the drain file: none takes new requests from the balancer.
    readiness = [fresh_get(server, "/readyz") for _ in range(8)]
    assert {response.status_code for response in readiness} == {503}
    assert readiness[0].json() == {"drain": f"draining: {drain} exists"}
    assert fresh_get(server, "/livez").status_code == 200
    # The upload goes on: what an operator waits to see at 0 before stopping the server.
    assert wait_for(lambda: uploads_in_progress(server) == 1)
    assert uploading.is_alive()

    uploading.join(60)
    assert answers[0].status_code == 202, answers[0].text
    assert answers[0].headers["range"] == f"0-{len(data) - 1}"
    with httpx.Client(timeout=60) as client:
        finished = client.put(location, params={"digest": digest})
        assert finished.status_code == 201, finished.text
        assert client.get(f"{server.url}/v2/e2e/drained/blobs/{digest}").content == data
    assert wait_for(lambda: uploads_in_progress(server) == 0)

    drain.unlink()
    assert {fresh_get(server, "/readyz").status_code for _ in range(4)} == {200}
