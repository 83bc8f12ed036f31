"""`portside serve` on an address already in use refuses to start, in one line naming the address.

granian binds its sockets with SO_REUSEPORT, so a second server of the same user on the same port
used to start without a word, and the kernel split the connections between the two.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ServerFactory
from .server import PortsideServer

pytestmark = pytest.mark.e2e

MESSAGE = "portside: cannot listen on 127.0.0.1:{port}: address already in use"


@pytest.fixture
def second(tmp_path: Path) -> Iterator[PortsideServer]:
    server = PortsideServer(tmp_path / "second", workers=1)
    try:
        yield server
    finally:
        server.stop()


def start_expecting_exit(server: PortsideServer, port: int, timeout: float = 20) -> int:
    """Start server on port (taken by someone else, so its readiness cannot be asked of the port);
    its exit status, once it has exited."""
    server.port = port
    server.host = f"127.0.0.1:{port}"
    server.url = f"http://{server.host}"
    server.wait_ready = lambda timeout=0: None  # type: ignore[method-assign]
    started = time.monotonic()
    server.start()
    assert server.process is not None
    status = server.process.wait(timeout)
    print(f"\nsecond server exited with {status} after {time.monotonic() - started:.2f}s")
    return status


def test_a_second_server_on_the_same_port_refuses_to_start_and_the_first_serves_on(
    portside_factory: ServerFactory, second: PortsideServer
) -> None:
    first = portside_factory()

    status = start_expecting_exit(second, first.port)

    assert status != 0
    log = second.log_text()
    assert MESSAGE.format(port=first.port) in log
    assert "Traceback" not in log
    assert "Listening at" not in log  # granian never started
    for _ in range(20):  # every connection reaches the first server
        assert httpx.get(f"{first.url}/v2/", timeout=5).status_code == 200
    assert first.process is not None
    assert first.process.poll() is None


def test_a_port_held_by_another_kind_of_listener_is_refused(second: PortsideServer) -> None:
    with socket.socket() as other:  # a plain listener, no SO_REUSEPORT
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]

        status = start_expecting_exit(second, port)

    assert status != 0
    log = second.log_text()
    assert MESSAGE.format(port=port) in log
    assert "Traceback" not in log
