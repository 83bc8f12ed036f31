"""ASGI middleware around every request: the access log line, the HTTP metrics and the API
version header.

Plain ASGI rather than BaseHTTPMiddleware, so streamed bodies pass through untouched and cheaply.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portside.api.guard import ROUTE_OBSERVER
from portside.api.requests import LOG_NOTES
from portside.server.logs import ACCESS, Access
from portside.server.metrics import Exchange

access_log = logging.getLogger("portside.access")

API_VERSION: Final = (b"docker-distribution-api-version", b"registry/2.0")
PATHSEND: Final = "http.response.pathsend"


class RegistryMiddleware:
    """Adds `Docker-Distribution-API-Version` to /v2 responses (the spec asks for it on 200 and
    401 of /v2/; distribution sends it everywhere), logs one line per request with method,
    path, status, bytes sent and duration, and with `metrics` records the request's metrics
    (server/metrics.py). Query strings are not logged: they can carry secrets."""

    def __init__(self, app: ASGIApp, metrics: bool = False) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        notes: dict[str, str] = {}
        scope[LOG_NOTES] = notes
        exchange = None
        if self.metrics:
            exchange = scope[ROUTE_OBSERVER] = Exchange(scope["method"])
        add_version = path.startswith("/v2")
        head = scope["method"] == "HEAD"  # the server drops HEAD bodies
        status = 500
        length = 0  # of the whole body, for a pathsend, which carries no bytes through here
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if exchange is not None and message["type"] == "http.request":
                size = len(message.get("body", b""))
                if size:
                    received += size
                    exchange.received(size)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, length, sent
            kind = message["type"]
            if kind == "http.response.body":
                size = 0 if head else len(message.get("body", b""))
                if size:
                    sent += size
                    if exchange is not None:
                        exchange.sent(size)
            elif kind == "http.response.start":
                status = message["status"]
                if add_version:
                    message["headers"] = [*message.get("headers", ()), API_VERSION]
                for key, value in message.get("headers", ()):
                    if key.lower() == b"content-length":
                        length = int(value)
            elif kind == PATHSEND:
                sent = length
                if exchange is not None:
                    exchange.sent(length)
            await send(message)

        try:
            await self.app(scope, counting_receive if exchange else receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            if exchange is not None:
                exchange.finish(status, seconds, received, sent, notes)
            if access_log.isEnabledFor(logging.INFO):
                _log(scope, path, status, sent, seconds, notes)


def _log(
    scope: Scope, path: str, status: int, sent: int, seconds: float, notes: dict[str, str]
) -> None:
    client = scope.get("client")
    agent = next((v for k, v in scope["headers"] if k.lower() == b"user-agent"), b"")
    access = Access(
        scope["method"], path, client, agent.decode("latin-1"), status, sent, seconds, notes
    )
    access_log.info(
        "%s %s %s %d %d %.1fms%s",
        client[0] if client else "-",
        scope["method"],
        path,
        status,
        sent,
        seconds * 1000,
        "".join(f" {key}={value}" for key, value in notes.items()),
        extra={ACCESS: access},
    )
