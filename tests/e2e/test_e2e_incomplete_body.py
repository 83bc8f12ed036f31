"""Request bodies cut short over real sockets against `portside serve`: a body shorter than its
Content-Length followed by a half-close (shutdown(SHUT_WR)), a malformed chunked body, a client
that resets mid-body. Each is answered 400 in the envelope while the client still reads, logged
without a traceback, and an upload session keeps its acknowledged offset and goes on.

The same requests in-process, endpoint by endpoint, are in tests/spec/test_incomplete_body.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time

import httpx
import pytest

from .server import PortsideServer

pytestmark = pytest.mark.e2e


def raw_exchange(server: PortsideServer, request: bytes, *, half_close: bool) -> bytes:
    """Send request bytes on a new connection (then shutdown(SHUT_WR) if half_close); everything
    the server answers until it closes, or 10 s pass."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
        except TimeoutError:
            pass
        return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_and_code(answer: bytes) -> tuple[int, str | None]:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    status = int(answer.split(b" ", 2)[1])
    body = answer.partition(b"\r\n\r\n")[2]
    try:
        return status, json.loads(body)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError):
        return status, None


def upload_offset(server: PortsideServer, location: str) -> int:
    response = httpx.get(f"{server.url}{location}", timeout=10)
    assert response.status_code == 204, response.text
    return int(response.headers["range"].split("-")[1]) + 1


def patch_head(location: str, framing: str) -> bytes:
    return (
        f"PATCH {location} HTTP/1.1\r\nHost: registry\r\n"
        f"Content-Type: application/octet-stream\r\n{framing}\r\n\r\n"
    ).encode()


def test_patch_shorter_than_its_content_length_then_half_closed_is_400_size_invalid(
    portside: PortsideServer,
) -> None:
    data = os.urandom(4096)
    with httpx.Client(base_url=portside.url, timeout=30) as client:
        location = client.post("/v2/team/app/blobs/uploads/").headers["location"]
        first = client.patch(location, content=data[:1000])
        assert first.status_code == 202, first.text

        answer = raw_exchange(
            portside,
            patch_head(location, "Content-Length: 3000") + data[1000:1500],
            half_close=True,
        )

        assert status_and_code(answer) == (400, "SIZE_INVALID")
        assert upload_offset(portside, location) == 1000
        rest = client.patch(location, content=data[1000:], headers={"Content-Range": "1000-4095"})
        assert rest.status_code == 202, rest.text
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        done = client.put(location, params={"digest": digest})
        assert done.status_code == 201, done.text
        assert client.get(f"/v2/team/app/blobs/{digest}").content == data
    log = portside.log_text()
    assert "Traceback" not in log
    assert "ClientDisconnect" not in log


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabc", b"3\r\nabcXY\r\n0\r\n\r\n"],
    ids=["bad-size-line", "truncated-then-half-closed", "bad-chunk-end"],
)
def test_patch_with_a_malformed_chunked_body_is_400_and_the_upload_goes_on(
    portside: PortsideServer, body: bytes
) -> None:
    data = os.urandom(2048)
    with httpx.Client(base_url=portside.url, timeout=30) as client:
        location = client.post("/v2/team/app/blobs/uploads/").headers["location"]
        assert client.patch(location, content=data[:512]).status_code == 202

        answer = raw_exchange(
            portside, patch_head(location, "Transfer-Encoding: chunked") + body, half_close=True
        )

        assert status_and_code(answer) == (400, "BLOB_UPLOAD_INVALID")
        assert upload_offset(portside, location) == 512
        done = client.put(
            location,
            params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()},
            content=data[512:],
        )
        assert done.status_code == 201, done.text
    assert "Traceback" not in portside.log_text()


def test_a_reset_mid_body_leaves_the_upload_at_its_offset_without_a_traceback(
    portside: PortsideServer,
) -> None:
    with httpx.Client(base_url=portside.url, timeout=30) as client:
        location = client.post("/v2/team/app/blobs/uploads/").headers["location"]
        assert client.patch(location, content=b"a" * 100).status_code == 202
        with socket.create_connection(("127.0.0.1", portside.port), timeout=10) as sock:
            sock.sendall(patch_head(location, "Content-Length: 100000") + b"b" * 5000)
            time.sleep(0.3)  # the server is reading the body
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.monotonic() + 10
        while not any(
            line.method == "PATCH" and line.status == 400 for line in portside.access_lines()
        ):
            assert time.monotonic() < deadline, "no access line of the reset PATCH"
            time.sleep(0.05)
        assert upload_offset(portside, location) == 100
    assert "Traceback" not in portside.log_text()


@pytest.mark.parametrize(
    ("method", "path", "framing", "code"),
    [
        (
            "POST",
            "/v2/team/app/blobs/uploads/?digest=sha256:" + "0" * 64,
            "Content-Length: 900",
            "SIZE_INVALID",
        ),
        ("PUT", "/v2/team/app/manifests/1.0", "Content-Length: 900", "SIZE_INVALID"),
        ("PUT", "/v2/team/app/manifests/1.0", "Transfer-Encoding: chunked", "MANIFEST_INVALID"),
    ],
    ids=["monolithic-post", "manifest-content-length", "manifest-chunked"],
)
def test_other_bodies_cut_short_are_400(
    portside: PortsideServer, method: str, path: str, framing: str, code: str
) -> None:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: registry\r\n"
        f"Content-Type: application/vnd.oci.image.manifest.v1+json\r\n{framing}\r\n\r\n"
    ).encode()
    body = b'40\r\n{"schemaVersion"' if "chunked" in framing else b'{"schemaVersion": 2'

    answer = raw_exchange(portside, head + body, half_close=True)

    assert status_and_code(answer) == (400, code)
    assert "Traceback" not in portside.log_text()
