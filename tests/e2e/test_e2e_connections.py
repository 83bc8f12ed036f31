"""Connections that send nothing, idle keep-alive connections, slow uploads, against a real
`portside serve` on loopback.

granian takes a permit per connection (its `backpressure`, 512 a worker by default) and times out
neither a connection that never sends a byte nor one idle between requests: about 1,100 silent
sockets locked every client out for good. Portside gives each worker `http_max_connections`
(4096) permits and closes idle connections itself (server/connections.py): silent ones after
http_header_timeout, stalled bodies after http_idle_timeout, while a body whose bytes keep
flowing goes on however long it takes. (hyper closes a kept-alive HTTP/1 connection that waits
for its next request head after http_header_timeout.)

Most tests share one server with short timeouts (2 s, 3 s); every socket a test opens is closed at
its end. The whole file takes about 40 s on two cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from .conftest import SERVERS
from .server import PORTSIDE, PortsideServer

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 2.0
IDLE_TIMEOUT = 3.0
SILENT_SOCKETS = 2000
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PortsideServer]:
    """A server of two workers with short timeouts, shared by this module's tests."""
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable at {PORTSIDE}")
    server = PortsideServer(
        tmp_path_factory.mktemp("connections"),
        2,
        {"http_header_timeout": f"{HEADER_TIMEOUT:g}s", "http_idle_timeout": f"{IDLE_TIMEOUT:g}s"},
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def show_quick_log(request: pytest.FixtureRequest, quick: PortsideServer) -> PortsideServer:
    request.node.stash[SERVERS] = [quick]
    return quick


@contextlib.contextmanager
def silent_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    """count connections to port that send nothing; all closed on the way out."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed sock (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_closed(sockets: list[socket.socket], timeout: float) -> float:
    """Seconds until the server has closed every socket; fails after timeout."""
    started = time.monotonic()
    pending = list(sockets)
    while pending:
        pending = [sock for sock in pending if not closed_by_server(sock)]
        elapsed = time.monotonic() - started
        assert elapsed < timeout, (
            f"{len(pending)} of {len(sockets)} still open after {elapsed:.1f}s"
        )
        time.sleep(0.05)
    return time.monotonic() - started


def timed_get(server: PortsideServer) -> float:
    started = time.monotonic()
    response = httpx.get(f"{server.url}/v2/", timeout=10)
    assert response.status_code == 200
    return time.monotonic() - started


def test_2000_silent_sockets_do_not_lock_out_a_client_with_the_default_settings(
    portside: PortsideServer,
) -> None:
    """The connection budget alone: no timeout has run yet (30 s, 75 s by default)."""
    with silent_sockets(portside.port, SILENT_SOCKETS):
        waited = timed_get(portside)
        print(f"\n{SILENT_SOCKETS} silent sockets: GET /v2/ answered in {waited:.3f}s")
        assert waited < 3


def test_2000_silent_sockets_are_closed_after_the_header_timeout(
    show_quick_log: PortsideServer,
) -> None:
    server = show_quick_log
    with silent_sockets(server.port, SILENT_SOCKETS) as sockets:
        waited = timed_get(server)
        took = wait_closed(sockets, HEADER_TIMEOUT + 8)
        print(
            f"\n{SILENT_SOCKETS} silent sockets: GET /v2/ answered in {waited:.3f}s; "
            f"all closed by the server {took:.1f}s after (http_header_timeout {HEADER_TIMEOUT}s)"
        )
        assert waited < 3
        assert took > HEADER_TIMEOUT - 1  # not at once
    assert timed_get(server) < 3


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout(
    show_quick_log: PortsideServer,
) -> None:
    """On HTTP/1, granian (hyper) times the wait for the next request head from the previous
    response: a kept-alive connection idles for http_header_timeout (here shorter than
    http_idle_timeout), and is used again within it."""
    server = show_quick_log
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(2):  # two requests on the connection: it is kept alive between them
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
            time.sleep(HEADER_TIMEOUT / 2)
        took = HEADER_TIMEOUT / 2 + wait_closed([sock], HEADER_TIMEOUT + 5)
    print(f"\nidle keep-alive connection closed {took:.1f}s after its last response")
    assert HEADER_TIMEOUT - 0.5 < took < IDLE_TIMEOUT + 1


def test_a_request_head_that_never_ends_is_closed_after_the_header_timeout(
    show_quick_log: PortsideServer,
) -> None:
    server = show_quick_log
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n")
        took = wait_closed([sock], HEADER_TIMEOUT + 5)
    assert took > HEADER_TIMEOUT - 0.5


def test_a_stalled_upload_body_is_closed_after_the_idle_timeout_and_the_upload_stays(
    show_quick_log: PortsideServer,
) -> None:
    server = show_quick_log
    with httpx.Client(base_url=server.url, timeout=30) as client:
        location = client.post("/v2/team/app/blobs/uploads/").headers["location"]
        assert client.patch(location, content=b"a" * 100).status_code == 202
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                f"PATCH {location} HTTP/1.1\r\nHost: registry\r\n"
                f"Content-Length: 10000\r\n\r\n".encode()
                + b"b" * 500
            )
            took = wait_closed([sock], IDLE_TIMEOUT + 5)
        assert took > IDLE_TIMEOUT - 0.5
        assert client.get(location).headers["range"] == "0-99"


@pytest.mark.slow
def test_a_200_mib_patch_trickled_over_longer_than_the_idle_timeout_succeeds(
    show_quick_log: PortsideServer,
) -> None:
    """Bytes keep flowing, with pauses shorter than the idle timeout: nothing cuts the upload,
    which lasts three times the idle timeout, and the blob is whole."""
    server = show_quick_log
    size = 200 * MiB
    piece = bytes(range(256)) * 4096  # 1 MiB
    pause = IDLE_TIMEOUT * 3 / 200
    digest = hashlib.sha256()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        location = client.post("/v2/team/app/blobs/uploads/").headers["location"]

        def trickle() -> Iterator[bytes]:
            for index in range(200):
                digest.update(piece)
                yield piece
                time.sleep(IDLE_TIMEOUT * 0.8 if index == 100 else pause)

        started = time.monotonic()
        response = client.patch(location, content=trickle(), headers={"Content-Length": str(size)})
        took = time.monotonic() - started
        assert response.status_code == 202, response.text
        assert response.headers["range"] == f"0-{size - 1}"
        done = client.put(location, params={"digest": f"sha256:{digest.hexdigest()}"})
        assert done.status_code == 201, done.text
    print(f"\n200 MiB PATCH trickled over {took:.1f}s (http_idle_timeout {IDLE_TIMEOUT}s)")
    assert took > IDLE_TIMEOUT * 2
