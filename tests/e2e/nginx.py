"""nginx in front of a `portside serve`, with the shipped deploy/nginx/portside.conf: a real nginx
process (not a daemon) whose config, pid, logs and temp folders all live under one folder.

Only the machine-specific lines of the shipped file are replaced (listen address, certificate,
htpasswd file, upstream); each must occur as often as expected, so the test breaks loudly if the
shipped file drifts from what the test checks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .server import _group_members, free_port
from .tls import TlsFiles

SHIPPED = Path(__file__).parents[2] / "deploy" / "nginx" / "portside.conf"
# The classic alternative: nginx does the basic auth (from its own htpasswd file).
SHIPPED_NGINX_AUTH = SHIPPED.with_name("portside-nginx-auth.conf")
START_TIMEOUT = 20.0
TEMP_FOLDERS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def have_nginx() -> bool:
    return shutil.which("nginx") is not None


class Nginx:
    """nginx on a free port of 127.0.0.1 with the shipped `site` file: TLS with `tls`, basic auth
    from `htpasswd` where the file does it, proxying to `upstream` (HOST:PORT). The port is
    chosen at construction, so that a backend can be told its public_url before either starts."""

    def __init__(self, root: Path, tls: TlsFiles, htpasswd: Path, site: Path = SHIPPED) -> None:
        self.root = root
        self.site = site
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"https://{self.host}"
        self.tls = tls
        self.htpasswd = htpasswd
        self.conf = root / "nginx.conf"
        self.error_log = root / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    def temp_folder(self, name: str) -> Path:
        return self.root / "temp" / name

    def temp_files(self) -> set[str]:
        """Files in nginx's temp folders now, those it holds open included: nginx unlinks a temp
        file right after creating it, so only its processes' open files show it."""
        temp = self.root / "temp"
        found = {str(path) for path in temp.rglob("*") if path.is_file()}
        for pid in _group_members(self.process.pid) if self.process else []:
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith(f"{temp}/"):
                            found.add(target)
        return found

    def site_conf(self, upstream: str) -> str:
        """The shipped file with this machine's listen address, files and upstream."""
        text = self.site.read_text()
        auth_files = 2 if self.site == SHIPPED_NGINX_AUTH else 0
        replacements = [
            ("listen 443 ssl http2;", f"listen {self.host} ssl http2;", 1),
            ("    listen [::]:443 ssl http2;\n", "", 1),
            ("/etc/nginx/tls/registry.example.com.crt", str(self.tls.certificate), 1),
            ("/etc/nginx/tls/registry.example.com.key", str(self.tls.key), 1),
            ("/etc/nginx/portside.htpasswd", str(self.htpasswd), auth_files),
            ("server 127.0.0.1:5000;", f"server {upstream};", 1),
        ]
        for old, new, count in replacements:
            assert text.count(old) == count, f"{self.site} should hold {old!r} {count} time(s)"
            text = text.replace(old, new)
        return text

    def start(self, upstream: str) -> None:
        assert self.process is None, "already running"
        (self.root / "portside.conf").write_text(self.site_conf(upstream))
        temp_paths = ""
        for name in TEMP_FOLDERS:
            self.temp_folder(name).mkdir(parents=True, exist_ok=True)
            temp_paths += f"    {name}_temp_path {self.temp_folder(name)};\n"
        self.conf.write_text(
            # Workers as root only when the test is root: they read the 0600 key and htpasswd.
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\npid {self.root / 'nginx.pid'};\n"
            + f"error_log {self.error_log} warn;\n"
            + "events {\n    worker_connections 256;\n}\n"
            + "http {\n"
            + f"    access_log {self.root / 'access.log'};\n"
            + temp_paths
            + f"    include {self.root / 'portside.conf'};\n"
            + "}\n"
        )
        self.process = run_nginx(self.conf, self.root, self.error_log)
        ready = f"{self.url}/v1/_ping"
        wait_until_answering(self.process, ready, self.log, verify=self.tls.ssl_context())

    def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            stop_nginx(process)

    def log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def run_nginx(conf: Path, root: Path, error_log: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground on conf (checked with `nginx -t` first), in a session of its own."""
    command = ["nginx", "-c", str(conf), "-p", str(root), "-e", str(error_log)]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"nginx -t:\n{check.stderr}"
    return subprocess.Popen(
        [*command, "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_answering(
    process: subprocess.Popen[bytes], url: str, log: Callable[[], str], **client: Any
) -> None:
    """Until GET url answers at all; RuntimeError with the log when nginx exits or is late."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{log()}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=2, **client)
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not answer within {START_TIMEOUT}s:\n{log()}")
        time.sleep(0.05)


def stop_nginx(process: subprocess.Popen[bytes]) -> None:
    """SIGQUIT (finish requests, then stop); SIGKILL to the whole group after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
