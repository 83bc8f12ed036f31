"""Timeouts: a server that accepts and never answers fails within the read timeout; a blob stream
fails when bytes stop coming, not when a download is merely long."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from portside.upstream import UpstreamUnavailable

from .conftest import UpstreamFactory
from .fake import FakeServer, Reply, Request
from .registries import digest_of

BLOB = bytes(range(256)) * 40  # 10 KiB


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel completes (listen backlog) but nobody accepts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_a_server_that_never_answers_fails_within_the_read_timeout(
    make_upstream: UpstreamFactory, silent_port: int
) -> None:
    upstream = make_upstream(f"http://127.0.0.1:{silent_port}", read_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        await upstream.head_manifest("app", "latest")
    assert 0.4 < time.monotonic() - started < 3
    assert upstream.last_error is not None
    assert "timed out" in upstream.last_error


def blob_server(pause: float, stall_after: int | None = None) -> FakeServer:
    """Serves BLOB in 1 KiB pieces, `pause` seconds apart; stalls for good after `stall_after`."""

    async def pieces() -> AsyncIterator[bytes]:
        for number, start in enumerate(range(0, len(BLOB), 1024)):
            if number == stall_after:
                await asyncio.sleep(3600)
            yield BLOB[start : start + 1024]
            await asyncio.sleep(pause)

    async def handle(request: Request) -> Reply:
        return Reply(200, {"Content-Length": str(len(BLOB))}, pieces())

    return FakeServer(handle)


async def test_a_blob_stream_that_stalls_fails_within_the_read_timeout(
    make_upstream: UpstreamFactory,
) -> None:
    async with blob_server(pause=0, stall_after=3) as server:
        upstream = make_upstream(server.url, read_timeout=0.5)
        started = time.monotonic()
        async with upstream.open_blob("app", digest_of(BLOB)) as blob:
            with pytest.raises(UpstreamUnavailable, match="timed out"):
                async for _ in blob:
                    pass
        assert time.monotonic() - started < 3
        assert upstream.last_error is not None
        assert "ReadTimeout" in upstream.last_error


async def test_a_slow_steady_blob_outlasts_the_read_timeout(
    make_upstream: UpstreamFactory,
) -> None:
    async with blob_server(pause=0.1) as server:  # 10 pieces: about 1 s in all
        upstream = make_upstream(server.url, read_timeout=0.5)
        started = time.monotonic()
        async with upstream.open_blob("app", digest_of(BLOB)) as blob:
            received = b"".join([chunk async for chunk in blob])
        assert received == BLOB
        assert time.monotonic() - started > 0.5
