"""GET, HEAD, PUT and DELETE /v2/<name>/manifests/<reference> (spec end-3, end-7, end-9)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from portside.api import requests
from portside.api.origins import change_origin, pull_origin
from portside.registry.errors import DeleteDisabled, ManifestUnknown
from portside.registry.manifests import OCI_INDEX, OCI_MANIFEST


def _accepts(accept: str | None, media_type: str) -> bool:
    """Whether an Accept header admits the stored media type. Like distribution, only OCI types
    are refused to clients that list media types without them; anything else is served as
    stored (old clients send no Accept, or one without the type they can read anyway)."""
    if not accept or media_type not in (OCI_MANIFEST, OCI_INDEX):
        return True
    accepted = {part.partition(";")[0].strip() for part in accept.split(",")} - {""}
    return not accepted or bool(accepted & {media_type, "*/*", "application/*"})


async def get_manifest(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    reference = request.path_params["reference"]
    accept = ", ".join(request.headers.getlist("accept"))
    route = registry.mirror.route(name) if registry.mirror is not None else None
    if route is not None and registry.mirror is not None:
        # A cache's name: a HEAD checks or fetches the manifest as a GET would.
        fetched = await registry.mirror.manifest(route, name, reference, _media_types(accept))
        requests.note_cache(request, fetched.outcome, str(route.upstream.url))
        manifest, content = fetched.manifest, fetched.content
    else:
        if request.method == "HEAD":
            manifest = await registry.manifests.stat(name, reference)
            content = b""
        else:
            manifest, content = await registry.manifests.get(name, reference)
        registry.manifests.pulled_by_tag(name, reference)
    if not _accepts(accept, manifest.media_type):
        raise ManifestUnknown(
            {"reason": f"stored as {manifest.media_type}, which the Accept header excludes"}
        )
    headers = {
        "Content-Type": manifest.media_type,
        "Docker-Content-Digest": manifest.digest,
        "ETag": f'"{manifest.digest}"',
        "Content-Length": str(manifest.size),
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers={"ETag": headers["ETag"]})
    if request.method == "GET" and (origin := pull_origin(request)) is not None:
        registry.manifests.pulled(manifest, reference, content, origin)
    return Response(b"" if request.method == "HEAD" else content, status_code=200, headers=headers)


def _media_types(accept: str) -> list[str]:
    """The media types of an Accept header, for the upstream: what the client can read."""
    return [part.partition(";")[0].strip() for part in accept.split(",") if part.strip()]


async def put_manifest(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    requests.refuse_cache_push(registry, name)
    body = await requests.small_body(request, request.app.state.max_manifest_size)
    pushed = await registry.manifests.put(
        name,
        request.path_params["reference"],
        request.headers.get("content-type"),
        body,
        change_origin(request),
    )
    headers = {
        "Location": f"/v2/{name}/manifests/{pushed.digest}",
        "Docker-Content-Digest": str(pushed.digest),
        "Content-Length": "0",
    }
    if pushed.subject is not None:
        headers["OCI-Subject"] = pushed.subject
    return Response(status_code=201, headers=headers)


async def delete_manifest(request: Request) -> Response:
    if not request.app.state.delete_enabled:
        raise DeleteDisabled()
    registry = requests.registry(request)
    name = requests.name(request)
    await registry.manifests.delete(name, request.path_params["reference"], change_origin(request))
    return Response(status_code=202, headers={"Content-Length": "0"})
