"""Tags list, catalog and referrers (spec end-8a, end-8b, end-12a, end-12b; catalog is the
distribution extension every client knows)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portside.api import guard, query, requests
from portside.registry.discovery import Page, page_of
from portside.registry.errors import NameUnknown
from portside.registry.manifests import OCI_INDEX
from portside.registry.names import Digest


def _link(path: str, n: int | None, page: Page) -> dict[str, str]:
    if page.next_last is None:
        return {}
    query = urlencode({"n": n if n is not None else len(page.items), "last": page.next_last})
    return {"Link": f'<{path}?{query}>; rel="next"'}


async def list_tags(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    n, last = requests.paging(request)
    route = registry.mirror.route(name) if registry.mirror is not None else None
    upstream = None
    if route is not None and registry.mirror is not None:
        upstream = await registry.mirror.tags(route, name)
    if upstream is None:
        page = await registry.discovery.tags(name, n, last)
    else:
        # The upstream's tags and those pushed or cached here, as one list.
        try:
            held = (await registry.discovery.tags(name, None, None)).items
        except NameUnknown:
            held = []
        page = page_of([*upstream, *held], n, last)
    return JSONResponse(
        {"name": name, "tags": page.items}, headers=_link(f"/v2/{name}/tags/list", n, page)
    )


async def list_catalog(request: Request) -> Response:
    registry = requests.registry(request)
    n, last = requests.paging(request)
    visible = guard.admission(request.scope).visible
    page = await registry.discovery.repositories(n, last, visible)
    return JSONResponse({"repositories": page.items}, headers=_link("/v2/_catalog", n, page))


async def list_referrers(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    subject = Digest.parse(request.path_params["digest"])
    artifact_type = query.one(request.scope, "artifactType") or None
    route = registry.mirror.route(name) if registry.mirror is not None else None
    if route is not None and registry.mirror is not None:
        upstream = await registry.mirror.referrers(route, name, subject, artifact_type)
        if upstream is not None:
            requests.note_cache(request, "pass", str(route.upstream.url))
            headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
            return Response(upstream, headers=headers, media_type=OCI_INDEX)
    referrers = await registry.discovery.referrers(name, subject, artifact_type)
    descriptors = []
    for manifest in referrers:
        descriptor: dict[str, object] = {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
        }
        if manifest.artifact_type:
            descriptor["artifactType"] = manifest.artifact_type
        if manifest.annotations:
            descriptor["annotations"] = json.loads(manifest.annotations)
        descriptors.append(descriptor)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return JSONResponse(body, headers=headers, media_type=OCI_INDEX)
