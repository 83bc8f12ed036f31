"""The circuit breaker: after failure_threshold consecutive unavailable answers, calls fail fast
without touching the network for open_seconds; then one trial call decides."""

from __future__ import annotations

import asyncio
import time

import pytest

from e2e.server import free_port
from portside.upstream import UpstreamNotFound, UpstreamUnavailable

from .conftest import UpstreamFactory
from .fake import FakeServer, Reply, Request


async def test_a_closed_port_opens_the_circuit_after_the_threshold(
    make_upstream: UpstreamFactory,
) -> None:
    upstream = make_upstream(f"http://127.0.0.1:{free_port()}", failure_threshold=3)
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable, match="ConnectError"):
            await upstream.head_manifest("app", "latest")
    assert not upstream.available
    assert upstream.last_error is not None
    assert "ConnectError" in upstream.last_error
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="circuit open") as raised:
        await upstream.head_manifest("app", "latest")
    assert time.monotonic() - started < 0.5  # no connect attempt, no wait
    assert raised.value.retry_after is not None
    assert 29 < raised.value.retry_after <= 30


class Flaky:
    """Answers 503 (Retry-After: 7), or 404 once `healthy`; `hold` keeps a request waiting."""

    def __init__(self) -> None:
        self.healthy = False
        self.hold: asyncio.Event | None = None

    async def __call__(self, request: Request) -> Reply:
        if self.hold is not None:
            await self.hold.wait()
        if self.healthy:
            return Reply(404, {"Content-Type": "application/json"}, b'{"errors":[]}')
        return Reply(503, {"Retry-After": "7"})


async def test_after_open_seconds_one_trial_call_closes_or_reopens_the_circuit(
    make_upstream: UpstreamFactory,
) -> None:
    flaky = Flaky()
    now = [0.0]
    async with FakeServer(flaky) as server:
        upstream = make_upstream(
            server.url, failure_threshold=2, open_seconds=30, clock=lambda: now[0]
        )
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable, match="503") as raised:
                await upstream.get_manifest("app", "latest")
            assert raised.value.retry_after == 7
        for _ in range(5):
            with pytest.raises(UpstreamUnavailable, match="circuit open"):
                await upstream.get_manifest("app", "latest")
        assert server.connections == 2, "no connection while the circuit is open"

        now[0] = 31.0  # half-open: the trial fails, the circuit opens again
        with pytest.raises(UpstreamUnavailable, match="503"):
            await upstream.get_manifest("app", "latest")
        with pytest.raises(UpstreamUnavailable, match="circuit open"):
            await upstream.get_manifest("app", "latest")
        assert server.connections == 3

        now[0] = 62.0  # half-open again: while the trial waits, other calls still fail fast
        flaky.healthy, flaky.hold = True, asyncio.Event()
        trial = asyncio.create_task(upstream.get_manifest("app", "latest"))
        while server.connections < 4:
            await asyncio.sleep(0.01)
        with pytest.raises(UpstreamUnavailable, match="circuit open"):
            await upstream.get_manifest("app", "latest")
        flaky.hold.set()
        with pytest.raises(UpstreamNotFound):
            await trial
        assert upstream.available, "an answer, even a 404, closes the circuit"
        flaky.hold = None
        with pytest.raises(UpstreamNotFound):
            await upstream.get_manifest("app", "latest")
        assert server.connections == 5


async def test_a_cancelled_trial_lets_the_next_call_try(make_upstream: UpstreamFactory) -> None:
    flaky = Flaky()
    now = [0.0]
    async with FakeServer(flaky) as server:
        upstream = make_upstream(server.url, failure_threshold=1, clock=lambda: now[0])
        with pytest.raises(UpstreamUnavailable, match="503"):
            await upstream.head_manifest("app", "latest")
        now[0] = 100.0
        flaky.healthy, flaky.hold = True, asyncio.Event()
        trial = asyncio.create_task(upstream.head_manifest("app", "latest"))
        while server.connections < 2:
            await asyncio.sleep(0.01)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        flaky.hold.set()
        with pytest.raises(UpstreamNotFound):
            await upstream.head_manifest("app", "latest")
        assert upstream.available
