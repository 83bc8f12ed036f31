"""A tiny HTTP/1.1 server in the test's event loop, for what real registries will not do on
demand: evil token realms, redirects to another host, stalls, failures. Each connection serves
one request and closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query
    headers: dict[str, str]  # names lowercase

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # bytes, or chunks (then give Content-Length in headers)
    body: bytes | AsyncIterator[bytes] = b""


Handler = Callable[[Request], Awaitable[Reply]]


class FakeServer:
    """`async with FakeServer(handler) as server`: server.url, server.requests (each one as it
    arrived), server.connections (accepted so far)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, *fields = head.rstrip("\r\n").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {}
        for entry in fields:
            name, _, value = entry.partition(":")
            headers[name.strip().lower()] = value.strip()
        request = Request(method, target, headers)
        self.requests.append(request)
        reply = await self.handler(request)
        reply_headers = {"Connection": "close", **reply.headers}
        if isinstance(reply.body, bytes):
            reply_headers.setdefault("Content-Length", str(len(reply.body)))
        lines = [f"HTTP/1.1 {reply.status} Fake"]
        lines += [f"{name}: {value}" for name, value in reply_headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            if isinstance(reply.body, bytes):
                writer.write(reply.body)
            else:
                async for chunk in reply.body:
                    writer.write(chunk)
                    await writer.drain()
        await writer.drain()


def replying(reply: Reply) -> Handler:
    """A handler that answers every request with the same reply."""

    async def handle(request: Request) -> Reply:
        return reply

    return handle
