"""The metrics of each HTTP exchange (portside.metrics.http and .proxy), recorded for the
middleware (server/middleware.py), and the flush that adds every worker's tallies to the files
a scrape reads, once a second.

The route's name, distribution's `handler` label, is known once the router has matched: the
matched route tells the exchange (api/guard.py's RouteObserver), which only then counts itself
in flight. A request no route serves (404, or stopped by a middleware) is `unmatched`. The
children of a route and method are looked up once per worker and kept (`_Labelled`), so that a
request costs a dict lookup and a few additions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from portside.metrics import http, proxy
from portside.metrics.export import exporter
from portside.metrics.instruments import CounterChild

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


class _Labelled:
    """The children of the HTTP metrics for one route name and method."""

    __slots__ = (
        "codes",
        "duration",
        "handler",
        "in_flight",
        "method",
        "received",
        "request_size",
        "response_size",
        "sent",
        "uploading",
    )

    def __init__(self, handler: str, method: str) -> None:
        self.handler, self.method = handler, method
        self.in_flight = http.in_flight.labels(handler)
        self.duration = http.duration.labels(handler, method)
        self.request_size = http.request_size.labels(handler)
        self.response_size = http.response_size.labels(handler)
        self.received = http.received.labels(handler)
        self.sent = http.sent.labels(handler)
        self.uploading = (handler, method) in UPLOADING
        self.codes: dict[int, CounterChild] = {}

    def requests(self, status: int) -> CounterChild:
        found = self.codes.get(status)
        if found is None:
            found = self.codes[status] = http.requests.labels(
                self.handler, self.method, str(status)
            )
        return found


_labelled: dict[tuple[str, str], _Labelled] = {}


def _children(handler: str, method: str) -> _Labelled:
    found = _labelled.get((handler, method))
    if found is None:
        found = _labelled[handler, method] = _Labelled(handler, method)
    return found


class Exchange:
    """One request's metrics: api.guard.RouteObserver, told the route's name by the router."""

    __slots__ = ("_children", "_matched", "method")

    def __init__(self, method: str) -> None:
        self.method = method if method in METHODS else "other"
        self._children = _children(UNMATCHED, self.method)
        self._matched = False

    @property
    def handler(self) -> str:
        return self._children.handler

    def matched(self, name: str) -> None:
        children = self._children = _children(name, self.method)
        self._matched = True
        children.in_flight.value += 1
        if children.uploading:
            http.uploads_in_progress.labels().value += 1

    def received(self, size: int) -> None:
        self._children.received.total += size

    def sent(self, size: int) -> None:
        self._children.sent.total += size

    def finish(
        self, status: int, seconds: float, received: int, sent: int, notes: dict[str, str]
    ) -> None:
        """The request is over: `received` and `sent` are its body bytes."""
        children = self._children
        if self._matched:
            children.in_flight.value -= 1
            if children.uploading:
                http.uploads_in_progress.labels().value -= 1
        children.requests(status).total += 1
        children.duration.observe(seconds)
        children.request_size.observe(received)
        children.response_size.observe(sent)
        outcome = notes.get("cache")
        if outcome is not None and children.handler in CACHED_TYPES:
            _count_cache(children.handler, outcome, sent)


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
