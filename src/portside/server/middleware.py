"""ASGI middleware around every request: the access log line and the API version header.

Plain ASGI rather than BaseHTTPMiddleware, so streamed bodies pass through untouched and cheaply.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portside.api.requests import LOG_NOTES

access_log = logging.getLogger("portside.access")

API_VERSION: Final = (b"docker-distribution-api-version", b"registry/2.0")
PATHSEND: Final = "http.response.pathsend"


class RegistryMiddleware:
    """Adds `Docker-Distribution-API-Version` to /v2 responses (the spec asks for it on 200 and
    401 of /v2/; distribution sends it everywhere) and logs one line per request with method,
    path, status, bytes sent and duration. Query strings are not logged: they can carry secrets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        notes: dict[str, str] = {}
        scope[LOG_NOTES] = notes
        add_version = path.startswith("/v2")
        status = 500
        length = 0  # of the whole body, for a pathsend, which carries no bytes through here
        sent = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status, length, sent
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                status = message["status"]
                if add_version:
                    message["headers"] = [*message.get("headers", ()), API_VERSION]
                for key, value in message.get("headers", ()):
                    if key.lower() == b"content-length":
                        length = int(value)
            elif kind == PATHSEND:
                sent = length
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    "%s %s %s %d %d %.1fms%s",
                    client[0] if client else "-",
                    scope["method"],
                    path,
                    status,
                    0 if scope["method"] == "HEAD" else sent,  # the server drops HEAD bodies
                    (time.perf_counter() - started) * 1000,
                    "".join(f" {key}={value}" for key, value in notes.items()),
                )
