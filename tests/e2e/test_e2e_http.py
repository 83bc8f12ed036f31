"""Plain HTTP against a real `portside serve`: the classic banner and ping with curl, and the access
log line each request leaves on stdout."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import httpx
import pytest

from .clients import digest_of, have
from .server import AccessLine, PortsideServer

pytestmark = pytest.mark.e2e


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names, last value wins) and body of one curl request."""
    if not have("curl"):
        pytest.skip("curl is not installed")
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--include", "--max-time", "30", *args],
        capture_output=True,
        check=True,
        timeout=60,
    )
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_root_answers_the_classic_banner_exactly(portside: PortsideServer) -> None:
    status, headers, body = curl(f"{portside.url}/")
    assert status == 200
    assert body == b'"docker-registry server"'
    assert headers["content-length"] == str(len(body))


def test_v1_ping_answers_true_as_a_standalone_registry(portside: PortsideServer) -> None:
    status, headers, body = curl(f"{portside.url}/v1/_ping")
    assert status == 200
    assert body.strip() == b"true"
    assert headers["x-docker-registry-standalone"].lower() == "true"


def wait_for_lines(
    server: PortsideServer, paths: set[str], count: int, timeout: float = 10
) -> list[AccessLine]:
    """The access lines of these paths, once there are count of them: a worker writes a request's
    line after sending the response, so it can lag behind."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.access_lines() if line.path in paths]
        if len(lines) >= count or time.monotonic() > deadline:
            time.sleep(0.2)  # time for a line too many, which the caller would catch
            return [line for line in server.access_lines() if line.path in paths]
        time.sleep(0.05)


def test_the_access_log_has_one_line_per_request_with_method_path_status_bytes_and_duration(
    portside: PortsideServer,
) -> None:
    repo = f"e2e/log-{uuid.uuid4().hex[:8]}"
    data = os.urandom(5000)
    digest = digest_of(data)
    with httpx.Client(base_url=portside.url, timeout=30) as client:
        requests: list[tuple[str, str, httpx.Response]] = []

        def send(method: str, path: str, **kwargs: object) -> httpx.Response:
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            requests.append((method, response.request.url.path, response))
            return response

        send("GET", f"/v2/{repo}/tags/list")  # 404 NAME_UNKNOWN, with a JSON error body
        send("POST", f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        send("GET", f"/v2/{repo}/blobs/{digest}")
        started = send("POST", f"/v2/{repo}/blobs/uploads/")
        send("DELETE", started.headers["location"])
        send("GET", f"/v2/{repo}/manifests/missing")
        send("PUT", f"/v2/{repo}/manifests/bad", content=b"{}", headers={"Content-Type": "x/y"})
        # The query string is left out of the log: it can carry secrets.
        send("GET", f"/v2/{repo}/tags/list", params={"n": "1", "last": "secret-token"})

    statuses = [response.status_code for _, _, response in requests]
    assert statuses == [404, 201, 200, 202, 204, 404, 400, 200], statuses
    paths = {path for _, path, _ in requests}
    lines = wait_for_lines(portside, paths, len(requests))
    assert len(lines) == len(requests), "\n".join(map(str, lines))
    for line in lines:
        assert "secret-token" not in line.path
        assert line.client == "127.0.0.1"
        assert line.duration_ms >= 0
    sent = [(method, path, response.status_code) for method, path, response in requests]
    for method, path, response in requests:
        key = (method, path, response.status_code)
        matching = [line for line in lines if (line.method, line.path, line.status) == key]
        assert len(matching) == sent.count(key), (key, lines)
        for line in matching:
            assert line.bytes == len(response.content), (line, len(response.content))


def test_the_access_log_counts_no_body_bytes_for_a_head_request(portside: PortsideServer) -> None:
    repo = f"e2e/head-{uuid.uuid4().hex[:8]}"
    data = os.urandom(4321)
    digest = digest_of(data)
    with httpx.Client(base_url=portside.url, timeout=30) as client:
        pushed = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        assert pushed.status_code == 201
        head = client.head(f"/v2/{repo}/blobs/{digest}")
        assert head.status_code == 200
        assert head.content == b""
    path = f"/v2/{repo}/blobs/{digest}"
    (line,) = [line for line in wait_for_lines(portside, {path}, 1) if line.method == "HEAD"]
    assert line.bytes == 0
