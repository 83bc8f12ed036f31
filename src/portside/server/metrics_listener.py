"""`metrics.listen`: a listener of its own for GET /metrics, in the `portside serve` process
(not a worker), serving the workers' totals to anyone who reaches it, as distribution's debug
address does. Plain HTTP from a thread: a scrape every few seconds needs no more."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from portside.metrics.export import CONTENT_TYPE, multiprocess_exposition

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], folder: Path) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.folder = folder
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        if self.path.partition("?")[0] != "/metrics":
            self.send_error(404, "only /metrics here")
            return
        try:
            body = multiprocess_exposition(self.server.folder)
        except Exception:
            log.exception("metrics listener: cannot read the workers' metrics")
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics listener: %s %s", self.address_string(), format % args)


class MetricsListener:
    """Listens on host:port once made (OSError if it cannot); serves from start() to stop()."""

    def __init__(self, host: str, port: int, folder: Path) -> None:
        self._server = _Server((host, port), folder)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-listener", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
