"""Metrics and logs of a running `portside serve` with two workers: promtool accepts what /metrics
and the listener of metrics.listen serve, a real Prometheus scraping the server sees the totals
of both workers, whichever one each scrape reaches, and log_format: json writes JSON lines."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .clients import OciClient
from .conftest import ServerFactory
from .server import PortsideServer, free_port

pytestmark = pytest.mark.e2e

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMTOOL is None or PROMETHEUS is None,
    reason="needs the prometheus Debian package (scripts/install-test-deps)",
)


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


def busy(server: PortsideServer) -> None:
    """A push, pulls, errors, health checks: traffic under most handlers."""
    with httpx.Client(timeout=60) as client:
        oci = OciClient(client, server.url)
        config = os.urandom(64).hex().encode()
        layer = os.urandom(4096)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": descriptor("application/vnd.oci.image.config.v1+json", config, oci),
                "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer, oci)],
            }
        ).encode()
        oci.push_manifest("e2e/app", "v1", manifest, "application/vnd.oci.image.manifest.v1+json")
        assert client.get(f"{server.url}/v2/e2e/app/manifests/v1").status_code == 200
        assert client.get(f"{server.url}/v2/e2e/app/manifests/v2").status_code == 404
        assert oci.tags("e2e/app") == ["v1"]
        for path in ("/v2/_catalog", "/debug/health", "/readyz", "/livez", "/nowhere"):
            client.get(f"{server.url}{path}")


def descriptor(media_type: str, data: bytes, oci: OciClient) -> dict[str, object]:
    return {"mediaType": media_type, "digest": oci.push_blob("e2e/app", data), "size": len(data)}


@needs_prometheus
def test_promtool_accepts_the_metrics_of_both_listeners(portside_factory: ServerFactory) -> None:
    listen = f"127.0.0.1:{free_port()}"
    server = portside_factory(metrics={"listen": listen})
    busy(server)
    time.sleep(1.5)  # every worker has flushed what it counted

    main = httpx.get(f"{server.url}/metrics", timeout=30)
    own = httpx.get(f"http://{listen}/metrics", timeout=30)

    for response in (main, own):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        checked = promtool_check(response.text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout + checked.stderr == ""
        assert 'registry_http_requests_total{code="201",handler="manifest",method="PUT"} 1.0' in (
            response.text
        )
    assert httpx.get(f"http://{listen}/other", timeout=30).status_code == 404


def ping_on_fresh_connections(server: PortsideServer, count: int) -> set[int]:
    """GET /v1/_ping count times, each on a connection of its own; the workers that served."""
    served: set[int] = set()
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.connect()
        assert connection.sock is not None
        worker = server.worker_serving(connection.sock.getsockname()[1])
        if worker is not None:
            served.add(worker)
        connection.request("GET", "/v1/_ping")
        assert connection.getresponse().status == 200
        connection.close()
    return served


@pytest.fixture
def prometheus(tmp_path: Path, portside: PortsideServer) -> Iterator[str]:
    """A Prometheus scraping the server's /metrics every second; its URL."""
    assert PROMETHEUS is not None
    folder = tmp_path / "prometheus"
    folder.mkdir()
    config = folder / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: portside\n    static_configs: [{{targets: ['{portside.host}']}}]\n"
    )
    port = free_port()
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("prometheus did not start:\n" + (folder / "prometheus.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def query(url: str, promql: str) -> float | None:
    answer = httpx.get(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=10)
    assert answer.status_code == 200, answer.text
    result = answer.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@needs_prometheus
@pytest.mark.slow
def test_prometheus_scrapes_the_totals_of_both_workers(
    portside: PortsideServer, prometheus: str
) -> None:
    pings = 40
    served = ping_on_fresh_connections(portside, pings)
    assert len(served) == 2, f"one worker served all {pings}: try again"

    deadline = time.monotonic() + 30
    total = None
    promql = 'sum(registry_http_requests_total{handler="ping",method="GET",code="200"})'
    while time.monotonic() < deadline:
        # A scrape reaches one worker; the sum is the same whichever, once both have flushed.
        total = query(prometheus, promql)
        if total == pings:
            break
        time.sleep(0.5)
    assert total == pings
    assert query(prometheus, 'up{job="portside"}') == 1


def test_json_logs_carry_distributions_fields_without_the_query(
    portside_factory: ServerFactory,
) -> None:
    server = portside_factory(log_format="json")
    httpx.get(f"{server.url}/v2/?password=hunter2", headers={"User-Agent": "e2e/1"}, timeout=30)
    time.sleep(0.5)

    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    [access] = [line for line in lines if line.get("http.request.useragent") == "e2e/1"]
    assert access["msg"] == "response completed"
    assert access["http.request.uri"] == "/v2/"
    assert access["http.response.status"] == 200
    assert "hunter2" not in server.log_text()
    assert any(line.get("logger") == "portside" for line in lines)  # the serve process's own
