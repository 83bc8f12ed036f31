"""The classic registry's unauthenticated endpoints: GET /, /v1/_ping and /v1/search."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portside.api import requests

SEARCH_PAGE_MAX = 100


async def banner(request: Request) -> Response:
    # `issue` is sent as written: the classic default '"docker-registry server"' carries its own
    # quotes, so `curl /` prints "docker-registry server" exactly as the classic registry did.
    return Response(request.app.state.issue, media_type="application/json")


async def ping(request: Request) -> Response:
    return JSONResponse(True, headers={"X-Docker-Registry-Standalone": "True"})


async def search(request: Request) -> Response:
    """Repositories whose name contains q, in the shape the docker and podman CLIs parse."""
    registry = requests.registry(request)
    query = request.query_params.get("q", "").strip().lower()
    n = request.query_params.get("n", "25")
    page = request.query_params.get("page", "1")
    page_size = min(int(n), SEARCH_PAGE_MAX) if n.isdigit() and int(n) > 0 else 25
    page_number = int(page) if page.isdigit() and int(page) > 0 else 1
    names = await registry.discovery.search(query)
    chosen = names[(page_number - 1) * page_size : page_number * page_size]
    return JSONResponse(
        {
            "query": query,
            "num_results": len(names),
            "num_pages": max(1, -(-len(names) // page_size)),
            "page": page_number,
            "page_size": page_size,
            "results": [
                {
                    "name": name,
                    "description": "",
                    "star_count": 0,
                    "is_official": False,
                    "is_automated": False,
                }
                for name in chosen
            ],
        }
    )
