"""Fixtures of the e2e suite: a `portside serve` process per test, and skopeo, podman and httpx
clients pointed at it. See tests/e2e/README.md."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .clients import OciClient, Podman, Skopeo, podman_for, skopeo_for
from .docker import Docker, DockerEngine, started_engine
from .server import PORTSIDE, PortsideServer

E2E_DIR = Path(__file__).parent
SERVERS = pytest.StashKey[list[PortsideServer]]()
LOG_LINES_SHOWN = 300

ServerFactory = Callable[..., PortsideServer]
EngineFactory = Callable[..., DockerEngine]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e is an e2e test, whether or not its module says so."""
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, show the tail of every server log the test started."""
    report = yield
    if report.failed:
        for server in item.stash.get(SERVERS, []):
            lines = server.log_text().splitlines()
            shown = "\n".join(lines[-LOG_LINES_SHOWN:])
            title = f"portside log {server.log_path} (last {min(len(lines), LOG_LINES_SHOWN)})"
            report.sections.append((title, shown))
    return report


@pytest.fixture
def portside_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerFactory]:
    """Starts servers: `portside_factory(workers=2, ssl_context=None, **settings)`; each gets its
    own port, storage and log under tmp_path. All are stopped (SIGTERM, then SIGKILL) at teardown.
    Give `ssl_context` (what the tests trust) with the tls_* settings: the server is then HTTPS."""
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable next to {sys.executable}")
    servers: list[PortsideServer] = []
    request.node.stash[SERVERS] = servers

    def start(
        workers: int = 2, ssl_context: ssl.SSLContext | None = None, **settings: Any
    ) -> PortsideServer:
        root = tmp_path / f"portside-{len(servers)}"
        server = PortsideServer(root, workers, settings, ssl_context)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def portside(portside_factory: ServerFactory) -> PortsideServer:
    """A running server with two workers, fresh storage and default settings."""
    return portside_factory()


@pytest.fixture
def skopeo(tmp_path: Path, portside: PortsideServer) -> Skopeo:
    return skopeo_for(tmp_path / "skopeo", portside.host)


@pytest.fixture
def podman(tmp_path: Path, portside: PortsideServer) -> Iterator[Podman]:
    with podman_for(tmp_path / "podman", portside.host) as client:
        yield client


@pytest.fixture
def oci(portside: PortsideServer) -> Iterator[OciClient]:
    with httpx.Client(timeout=60) as client:
        yield OciClient(client, portside.url)


# The Docker engine (docker.py), for test_e2e_docker.py and test_e2e_cache.py ------------------


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """One plain engine for every test that needs no daemon.json of its own."""
    engine = started_engine(tmp_path_factory.mktemp("docker-engine"))
    yield engine
    engine.stop()


@pytest.fixture
def docker_engine_factory(tmp_path: Path) -> Iterator[EngineFactory]:
    """Starts engines with extra daemon.json keys, e.g.
    `docker_engine_factory({"registry-mirrors": ["http://127.0.0.1:PORT"]})`; stopped at
    teardown."""
    engines: list[DockerEngine] = []

    def start(daemon_settings: dict[str, Any] | None = None) -> DockerEngine:
        engine = started_engine(tmp_path / f"docker-engine-{len(engines)}", daemon_settings)
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop()


@pytest.fixture
def docker(tmp_path: Path, docker_engine: DockerEngine) -> Docker:
    """The docker CLI on the shared engine, with a config folder (logins) of this test's own."""
    return docker_engine.client(tmp_path / "docker")
