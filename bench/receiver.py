"""A notification endpoint for --observability-ab: nginx answering 204 to every POST, so the
receiver costs next to nothing and what is measured is Portside's side of the delivery."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools import BenchError

READY_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def receiving(workdir: Path) -> Iterator[str]:
    """nginx on a free loopback port until the block exits; the URL to send events to."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise BenchError("nginx is missing: sudo apt-get install -y nginx-light")
    workdir.mkdir(parents=True)
    port = _free_port()
    config = workdir / "nginx.conf"
    config.write_text(
        f"daemon off;\npid {workdir / 'nginx.pid'};\nerror_log {workdir / 'error.log'};\n"
        "worker_processes 1;\nevents {}\nhttp {\n"
        f"  access_log off;\n  client_body_temp_path {workdir};\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }}\n}}\n"
    )
    process = subprocess.Popen(
        [nginx, "-c", str(config), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"nginx did not start: {config}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/events"
    finally:
        process.terminate()
        process.wait(timeout=10)
