"""Start and stop the two registries under test, each on a free loopback port with fresh storage."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

PORTSIDE = "portside"
DISTRIBUTION = "distribution"
REGISTRY_NAMES = (PORTSIDE, DISTRIBUTION)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class RegistryStartError(RuntimeError):
    """The registry could not be started or never answered `GET /v2/`."""


@dataclass(frozen=True)
class Registry:
    name: str
    url: str
    version: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def host(self) -> str:
        """HOST:PORT, as skopeo's `docker://` references want it."""
        return self.url.removeprefix("http://")

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


def free_port() -> int:
    # The port is released before the registry binds it; on a quiet loopback that race is harmless.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def portside_executable() -> str:
    """The `portside` script of the venv running this harness, else the one on PATH."""
    beside = Path(sys.executable).with_name("portside")
    if beside.is_file():
        return str(beside)
    found = shutil.which("portside")
    if found is None:
        raise RegistryStartError(
            f"no `portside` executable next to {sys.executable} or on PATH "
            "(pip install -e . into the venv that runs the benchmark)"
        )
    return found


def version_of(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else "unknown"


def distribution_command(workdir: Path, port: int) -> list[str]:
    config = workdir / "config.yml"
    # JSON-style flow mappings are valid YAML, so no YAML library is needed to write them.
    config.write_text(
        "version: 0.1\n"
        "log: {level: error, accesslog: {disabled: true}}\n"
        f'storage: {{filesystem: {{rootdirectory: "{workdir / "storage"}"}}, '
        "delete: {enabled: true}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    return ["docker-registry", "serve", str(config)]


def portside_command(workdir: Path, port: int) -> list[str]:
    config = workdir / "config.yml"
    config.write_text(f'bench: {{storage_path: "{workdir / "storage"}", loglevel: warning}}\n')
    return [
        portside_executable(),
        "serve",
        "--config",
        str(config),
        "--flavor",
        "bench",
        "--listen",
        f"127.0.0.1:{port}",
    ]


def wait_until_ready(registry: Registry) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if registry.exited():
            raise RegistryStartError(
                f"{registry.name} exited with code {registry.process.returncode} at start:\n"
                f"{registry.log_tail()}"
            )
        try:
            # Any answer below 500 means the HTTP stack is up; a scenario that then fails says why.
            if httpx.get(f"{registry.url}/v2/", timeout=2.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RegistryStartError(
        f"{registry.name} did not answer GET /v2/ within {READY_TIMEOUT_S:.0f}s:\n"
        f"{registry.log_tail()}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the registry and everything it forked (Portside's worker processes)."""
    # start_new_session made the registry a process group leader: signal the whole group, which
    # also reaches workers that outlived a crashed leader.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def running(name: str, workdir: Path) -> Iterator[Registry]:
    """Run registry `name` with its storage under `workdir` until the block exits."""
    workdir.mkdir(parents=True)
    (workdir / "storage").mkdir()
    port = free_port()
    if name == DISTRIBUTION:
        command = distribution_command(workdir, port)
        version = version_of(["docker-registry", "--version"])
    else:
        command = portside_command(workdir, port)
        version = version_of([command[0], "--version"])
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        try:
            # A session of its own keeps the terminal's Ctrl-C away from the registry, so it is
            # stopped by stop() after the harness has finished reporting, not mid-request.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            raise RegistryStartError(f"cannot run {command[0]}: {error}") from error
    registry = Registry(name, f"http://127.0.0.1:{port}", version, process, log_path)
    try:
        wait_until_ready(registry)
        yield registry
    finally:
        stop(process)
