"""A notification endpoint as a real process: `python receiver.py PORT FILE [SECRET]` appends each
event it is POSTed to FILE, one JSON line each, and answers 200; with SECRET it answers 401 to a
request whose X-Portside-Signature is not the HMAC-SHA256 of its body. The Receiver class runs it
for a test: start, stop (SIGKILL), events."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx


class Receiver:
    def __init__(self, root: Path, port: int, secret: str | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.file = root / "events.jsonl"
        self.port = port
        self.url = f"http://127.0.0.1:{port}/events"
        self.secret = secret
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, __file__, str(self.port), str(self.file)]
        self.process = subprocess.Popen([*command, *([self.secret] if self.secret else [])])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the receiver did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def events(self) -> list[dict[str, Any]]:
        if not self.file.exists():
            return []
        return [json.loads(line) for line in self.file.read_text().splitlines() if line]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The events, once at least count have come (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while len(found := self.events()) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return found


def _serve(port: int, file: Path, secret: str | None) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if secret is not None:
                expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Portside-Signature", ""), expected):
                    self.send_response(401)
                    self.end_headers()
                    return
            envelope = json.loads(body)
            with file.open("a") as out:
                for event in envelope["events"]:
                    event["_content_type"] = self.headers["Content-Type"]
                    out.write(json.dumps(event) + "\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
