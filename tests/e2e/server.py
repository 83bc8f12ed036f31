"""`portside serve` as a real process: start, wait until it answers, restart, SIGKILL, read its log.

The server runs in its own session (start_new_session=True), so that its process group holds the
granian parent and every worker: `kill()` SIGKILLs the whole group, as a power cut or the OOM
killer would, and `stop()` sends SIGTERM to the parent, as systemd does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

PORTSIDE = Path(sys.executable).with_name("portside")
FLAVOR = "e2e"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

# `<time> INFO portside.access <client> <METHOD> <path> <status> <bytes> <duration>ms`
ACCESS_LINE = re.compile(
    r"portside\.access (?P<client>\S+) (?P<method>[A-Z]+) (?P<path>\S+) "
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<duration>\d+(?:\.\d+)?)ms"
    r"(?P<notes>(?: \S+=\S+)*)$"
)


@dataclass(frozen=True)
class AccessLine:
    client: str
    method: str
    path: str
    status: int
    bytes: int
    duration_ms: float
    notes: dict[str, str] = field(default_factory=dict)  # what a handler added, e.g. cache=hit


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


class PortsideServer:
    """One registry: a config file, a storage folder, a port and a log file, all under root. The
    port and storage stay the same across restarts. With `ssl_context` (trusting the CA of the
    settings' tls_certificate, and holding a client certificate for tls_client_ca), it is HTTPS."""

    def __init__(
        self,
        root: Path,
        workers: int = 2,
        settings: dict[str, Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.ssl_context = ssl_context
        self.url = f"{'http' if ssl_context is None else 'https'}://{self.host}"
        self.storage_path = root / "storage"
        self.config_path = root / "portside.yml"
        self.log_path = root / "portside.log"
        self.workers = workers
        self.settings: dict[str, Any] = {
            "storage_path": str(self.storage_path),
            "loglevel": "info",
            "workers": workers,
            **(settings or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def stored_blob(self, digest: str) -> Path:
        """Where the filesystem store keeps the blob of digest."""
        encoded = digest.removeprefix("sha256:")
        return self.storage_path / "blobs" / "sha256" / encoded[:2] / encoded

    # Lifecycle ----------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        assert self.process is None, "already running"
        self.config_path.write_text(yaml.safe_dump({FLAVOR: self.settings}))
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- e2e: start #{self.starts} on {self.host} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    str(PORTSIDE),
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--flavor",
                    FLAVOR,
                    "--listen",
                    self.host,
                    "--workers",
                    str(self.workers),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until GET /v2/ answers 200, or 401 with auth on (every worker need not be up;
        the port is)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"portside exited with {self.process.returncode} before answering:\n"
                    + self.log_text()[-5000:]
                )
            with contextlib.suppress(httpx.TransportError):
                verify = self.ssl_context or True
                # 401: the registry answers, and wants a login (an `auth` section).
                answer = httpx.get(f"{self.url}/v2/", timeout=2, verify=verify)
                if answer.status_code in (200, 401):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"portside did not answer GET /v2/ within {timeout}s:\n"
                    + self.log_text()[-5000:]
                )
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM to the parent, which stops its workers; SIGKILL to the group after timeout.
        Returns the parent's exit status (None if it was not running)."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self._wait_group_gone(process.pid, kill_after=5.0)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (parent and workers) at once; wait until all are gone."""
        assert self.process is not None, "not running"
        process, self.process = self.process, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        self._wait_group_gone(process.pid, kill_after=0.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    @staticmethod
    def _wait_group_gone(pgid: int, kill_after: float) -> None:
        deadline = time.monotonic() + kill_after
        killed = False
        while members := _group_members(pgid):
            if not killed and time.monotonic() >= deadline:
                for pid in members:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                killed = True
            if time.monotonic() > deadline + 10:
                raise RuntimeError(f"processes {members} of group {pgid} would not die")
            time.sleep(0.02)

    # Inspection ---------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_lines(self) -> list[AccessLine]:
        found = []
        for line in self.log_text().splitlines():
            match = ACCESS_LINE.search(line)
            if match:
                found.append(
                    AccessLine(
                        match["client"],
                        match["method"],
                        match["path"],
                        int(match["status"]),
                        int(match["bytes"]),
                        float(match["duration"]),
                        dict(note.split("=", 1) for note in match["notes"].split()),
                    )
                )
        return found

    def worker_pids(self) -> list[int]:
        """The granian worker processes: the children of the server's parent process."""
        assert self.process is not None
        children: list[int] = []
        for task in os.listdir(f"/proc/{self.process.pid}/task"):
            text = Path(f"/proc/{self.process.pid}/task/{task}/children").read_text()
            children.extend(int(pid) for pid in text.split())
        return children

    def worker_serving(self, client_port: int, timeout: float = 2.0) -> int | None:
        """The worker process holding the server side of the TCP connection from client_port
        (found through /proc/net/tcp and the workers' file descriptors), while it is open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inodes = _tcp_inodes(self.port, client_port)
            for pid in self.worker_pids():
                with contextlib.suppress(OSError):
                    for fd in os.listdir(f"/proc/{pid}/fd"):
                        with contextlib.suppress(OSError):
                            target = os.readlink(f"/proc/{pid}/fd/{fd}")
                            if target.startswith("socket:[") and target[8:-1] in inodes:
                                return pid
            time.sleep(0.01)
        return None


def _tcp_inodes(local_port: int, remote_port: int) -> set[str]:
    """Socket inodes of IPv4 TCP connections with these local and remote ports."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local = int(fields[1].rpartition(":")[2], 16)
        remote = int(fields[2].rpartition(":")[2], 16)
        if local == local_port and remote == remote_port:
            inodes.add(fields[9])
    return inodes
