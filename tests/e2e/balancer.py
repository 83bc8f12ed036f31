"""nginx as a load balancer on loopback: one plain-HTTP port in front of several `portside serve`
instances, round robin, passing a request to the next instance when one cannot be reached
(`proxy_next_upstream error timeout`), keeping no idle connection to any, and dropping the
client's connection when the instance dies in the middle of its request. A real nginx process
(not a daemon) whose config, pid, logs and temp folders all live under one folder, as in
nginx.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .nginx import TEMP_FOLDERS, run_nginx, stop_nginx, wait_until_answering
from .server import _group_members, free_port

ESTABLISHED = "01"  # the state column of /proc/net/tcp


@dataclass(frozen=True)
class LogLine:
    method: str
    path: str
    status: str
    received: int  # `$request_length`: the request's bytes, line, headers and body
    sent: int  # `$bytes_sent`: the response's bytes
    upstream: str  # `$upstream_addr`: `A`, or `A, B` where nginx went on to the next instance


class Balancer:
    """nginx on a free port of 127.0.0.1, proxying to `upstreams` (HOST:PORT each). An instance
    that refuses a connection, or does not accept one within `connect_timeout`, is skipped for
    `fail_timeout` seconds; the request goes to the next one (at most every instance once)."""

    def __init__(
        self,
        root: Path,
        upstreams: list[str],
        fail_timeout: int = 2,
        connect_timeout: int = 2,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.upstreams = upstreams
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.conf = root / "nginx.conf"
        self.error_log = root / "error.log"
        self.access_log = root / "access.log"
        self.fail_timeout = fail_timeout
        self.connect_timeout = connect_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        servers = "".join(
            f"        server {upstream} max_fails=1 fail_timeout={self.fail_timeout}s;\n"
            for upstream in self.upstreams
        )
        temp_paths = ""
        for name in TEMP_FOLDERS:
            folder = self.root / "temp" / name
            folder.mkdir(parents=True, exist_ok=True)
            temp_paths += f"    {name}_temp_path {folder};\n"
        return (
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\npid {self.root / 'nginx.pid'};\n"
            + f"error_log {self.error_log} warn;\n"
            + "events {\n    worker_connections 256;\n}\n"
            + "http {\n"
            + "    log_format upstreams "
            + "'$request_method $uri $status $request_length $bytes_sent $upstream_addr';\n"
            + f"    access_log {self.access_log} upstreams;\n"
            + temp_paths
            + "    upstream portside {\n"
            + servers
            + "    }\n"
            + "    server {\n"
            + f"        listen {self.host};\n"
            + "        client_max_body_size 0;\n"
            + "        proxy_http_version 1.1;\n"
            + "        proxy_set_header Host $http_host;\n"
            + "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            + "        proxy_set_header X-Forwarded-Proto $scheme;\n"
            + "        proxy_buffering off;\n"
            + f"        proxy_connect_timeout {self.connect_timeout}s;\n"
            + "        proxy_read_timeout 120s;\n"
            + "        proxy_send_timeout 120s;\n"
            + "        proxy_next_upstream error timeout;\n"
            + f"        proxy_next_upstream_tries {len(self.upstreams)};\n"
            # An instance that dies mid-request: drop the client's connection (444), as a TCP
            # balancer would, rather than answer 502. skopeo 1.9 and podman 4.3 retry a dropped
            # connection (--retry-times), never a 5xx: c/image reads no error body of a 5xx.
            + "        error_page 502 504 = @dropped;\n"
            + "        location @dropped {\n"
            + "            return 444;\n"
            + "        }\n"
            + "        location / {\n"
            + "            proxy_pass http://portside;\n"
            + "        }\n"
            + "    }\n"
            + "}\n"
        )

    def start(self) -> None:
        assert self.process is None, "already running"
        self.conf.write_text(self.config())
        self.process = run_nginx(self.conf, self.root, self.error_log)
        wait_until_answering(self.process, f"{self.url}/v2/", self.log)

    def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            stop_nginx(process)

    def connections_to(self, port: int) -> set[str]:
        """The socket inodes of nginx's open connections to 127.0.0.1:port. nginx keeps no idle
        connection to an instance (no `keepalive`): each is a request in flight."""
        assert self.process is not None
        wanted = {
            fields[9]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if (fields := line.split())[3] == ESTABLISHED and fields[2] == f"0100007F:{port:04X}"
        }
        found = set()
        for pid in _group_members(self.process.pid):
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith("socket:[") and target[8:-1] in wanted:
                            found.add(target[8:-1])
        return found

    def lines(self) -> list[LogLine]:
        """The requests nginx has answered so far."""
        with contextlib.suppress(FileNotFoundError):
            text = self.access_log.read_text(errors="replace")
            return [
                LogLine(method, path, status, int(received), int(sent), upstream)
                for line in text.splitlines()
                if line.count(" ") >= 5
                for method, path, status, received, sent, upstream in [line.split(" ", 5)]
            ]
        return []

    def log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
