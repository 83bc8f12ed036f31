"""DELETE /v2/_portside/repositories/<name>: a whole repository, which the distribution spec has
no endpoint for (distribution#2747). Under /v2/_portside/, where no repository name can start
(a component starts with a letter or digit), with the `delete` action on the repository."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portside.api import requests
from portside.api.origins import change_origin
from portside.registry.errors import DeleteDisabled


async def delete_repository(request: Request) -> Response:
    """202 with what went: {"repository", "manifests", "tags"}; the blobs go with the next
    garbage collection (those no other repository holds)."""
    if not request.app.state.delete_enabled:
        raise DeleteDisabled()
    registry = requests.registry(request)
    name = requests.name(request)
    removed = await registry.repositories.delete(name, change_origin(request))
    body = {"repository": name, "manifests": removed.manifests, "tags": removed.tags}
    return JSONResponse(body, status_code=202)
