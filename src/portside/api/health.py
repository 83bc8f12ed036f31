"""GET /debug/health (distribution's), /livez and /readyz (Kubernetes' probes), without
credentials: 200 with `{}` when all is well, else 503 with `{"check": "what is wrong"}`
(registry/health.py has the checks). /debug/health also names upstreams of the cache that do
not answer, without failing for them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portside.registry.health import Health, Report

NO_STORE = {"Cache-Control": "no-store"}


def _health(request: Request) -> Health:
    health: Health = request.app.state.health
    return health


def _answer(report: Report, body: dict[str, str]) -> Response:
    return JSONResponse(body, status_code=200 if report.healthy else 503, headers=NO_STORE)


async def debug_health(request: Request) -> Response:
    report = await _health(request).report()
    return _answer(report, report.failures | report.notes)


async def livez(request: Request) -> Response:
    """The process answers: nothing else is asked, so that a restart cures only a hung one."""
    return JSONResponse({}, headers=NO_STORE)


async def readyz(request: Request) -> Response:
    """Storage and database work and the instance is not drained: send it new requests."""
    report = await _health(request).readiness()
    return _answer(report, report.failures)
