"""The classic registry's unauthenticated endpoints: GET /, /v1/_ping and /v1/search."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from portside.api import guard, query, requests
from portside.registry.errors import Unauthorized

# docker and podman ask for 25 by default, and docker for at most 100.
SEARCH_PAGE_DEFAULT = 25
SEARCH_PAGE_MAX = 100


async def banner(request: Request) -> Response:
    # A browser (it asks for HTML) is sent to the web UI, where there is one; curl and the
    # clients ask for anything and get the banner.
    accept = request.headers.get("accept", "")
    if request.app.state.ui is not None and "text/html" in accept.lower():
        return RedirectResponse("/ui/", status_code=303)
    # `issue` is sent as written: the classic default '"docker-registry server"' carries its own
    # quotes, so `curl /` prints "docker-registry server" exactly as the classic registry did.
    return Response(request.app.state.issue, media_type="application/json")


async def ping(request: Request) -> Response:
    return JSONResponse(True, headers={"X-Docker-Registry-Standalone": "True"})


async def search(request: Request) -> Response:
    """Repositories whose name or description contains q, ignoring case, in the shape the docker
    and podman CLIs parse; only those the caller may pull when authorization says which."""
    registry = requests.registry(request)
    text = (query.one(request.scope, "q") or "").strip()
    page_size = min(requests.page_number(request, "n", SEARCH_PAGE_DEFAULT), SEARCH_PAGE_MAX)
    page = requests.page_number(request, "page", 1)
    if not request.app.state.search:
        # search_backend is empty: the classic registry without a search index answered so.
        return JSONResponse({"query": text, "num_results": 0, "results": []})
    admission = guard.admission(request.scope)
    found = await registry.discovery.search(text, page, page_size, admission.visible)
    challenge = admission.login_challenge
    if found.total == 0 and challenge is not None:
        # podman sends /v1/search without credentials, and asks the authenticated /v2/_catalog
        # only when this is not a 200: an anonymous caller who sees nothing is told to log in,
        # so that a logged-in user finds their repositories (docker over HTTPS sends its login).
        raise Unauthorized("log in to search", challenge=challenge)
    return JSONResponse(
        {
            "query": text,
            "num_results": found.total,
            "num_pages": max(1, -(-found.total // page_size)),
            "page": page,
            "page_size": page_size,
            "results": [
                {
                    "name": repository.name,
                    "description": repository.description or "",
                    "star_count": 0,
                    "is_official": False,
                    "is_automated": False,
                }
                for repository in found.items
            ],
        }
    )
