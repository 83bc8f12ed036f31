"""GET /metrics: the Prometheus text format of every worker's metrics (portside.metrics), for
callers that Need.METRICS admits (api/guard.py)."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from portside.metrics.export import CONTENT_TYPE, exporter


async def get_metrics(request: Request) -> Response:
    # In a thread: it reads and adds up the files of every worker.
    body = await to_thread.run_sync(exporter().exposition)
    return Response(body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
