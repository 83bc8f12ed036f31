"""The metrics of each HTTP exchange (portside.metrics.http and .proxy), recorded for the
middleware (server/middleware.py), and the flush that adds every worker's tallies to the files
a scrape reads, once a second.

The route's name, distribution's `handler` label, is known once the router has matched: the
matched route tells the exchange (api/guard.py's RouteObserver), which only then counts itself
in flight. A request no route serves (404, or stopped by a middleware) is `unmatched`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from portside.metrics import http, proxy
from portside.metrics.export import exporter
from portside.metrics.instruments import CounterChild, GaugeChild

log = logging.getLogger(__name__)

UNMATCHED: Final = "unmatched"
# Label values stay a small fixed set: any other method a client sends counts as "other".
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests that bring blob bytes to an upload session (portside_uploads_in_progress).
UPLOADING: Final = frozenset({("blob_upload", "POST"), ("blob_upload_chunk", "PATCH"),
                              ("blob_upload_chunk", "PUT")})  # fmt: skip
# The cache's outcomes (api/requests.py's note_cache) that served what it held.
HITS: Final = frozenset({"hit", "revalidated", "stale"})
CACHED_TYPES: Final = frozenset({"blob", "manifest"})
FLUSH_SECONDS: Final = 1.0


class Exchange:
    """One request's metrics: api.guard.RouteObserver, told the route's name by the router."""

    __slots__ = ("_in_flight", "_received", "_sent", "_uploading", "handler", "method")

    def __init__(self, method: str) -> None:
        self.method = method if method in METHODS else "other"
        self.handler = UNMATCHED
        self._in_flight: GaugeChild | None = None
        self._uploading = False
        self._received: CounterChild | None = None
        self._sent: CounterChild | None = None

    def matched(self, name: str) -> None:
        self.handler = name
        self._in_flight = http.in_flight.labels(name)
        self._in_flight.inc()
        if (name, self.method) in UPLOADING:
            self._uploading = True
            http.uploads_in_progress.labels().inc()

    def received(self, size: int) -> None:
        if self._received is None:
            self._received = http.received.labels(self.handler)
        self._received.inc(size)

    def sent(self, size: int) -> None:
        if self._sent is None:
            self._sent = http.sent.labels(self.handler)
        self._sent.inc(size)

    def finish(
        self, status: int, seconds: float, received: int, sent: int, notes: dict[str, str]
    ) -> None:
        """The request is over: `received` and `sent` are its body bytes."""
        handler = self.handler
        if self._in_flight is not None:
            self._in_flight.dec()
        if self._uploading:
            http.uploads_in_progress.labels().dec()
        http.requests.labels(handler, self.method, str(status)).inc()
        http.duration.labels(handler, self.method).observe(seconds)
        http.request_size.labels(handler).observe(received)
        http.response_size.labels(handler).observe(sent)
        outcome = notes.get("cache")
        if outcome is not None and handler in CACHED_TYPES:
            _count_cache(handler, outcome, sent)


def _count_cache(kind: str, outcome: str, sent: int) -> None:
    """distribution's proxy metrics: a request, a hit or a miss, and the bytes sent; the bytes
    fetched are counted where the fetch stores them (registry/mirror.py)."""
    if outcome not in HITS and outcome != "miss":
        return  # "pass": a listing the upstream answers, neither held nor fetched
    proxy.requests.labels(kind).inc()
    (proxy.hits if outcome in HITS else proxy.misses).labels(kind).inc()
    proxy.outcomes.labels(kind, outcome).inc()
    proxy.pushed_bytes.labels(kind).inc(sent)


@contextlib.asynccontextmanager
async def flushing() -> AsyncIterator[None]:
    """Flush this worker's tallies every FLUSH_SECONDS while the block runs, and once at its end,
    so that a scrape that reaches another worker sees them."""
    task = asyncio.create_task(_flush_periodically())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        exporter().flush()


async def _flush_periodically() -> None:
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        try:
            exporter().flush()
        except Exception:  # a full disk under the folder, say: keep serving, say so
            log.exception("metrics flush failed")
            await asyncio.sleep(60 * FLUSH_SECONDS)
