"""Blob uploads: POST, GET, PATCH, PUT and DELETE under /v2/<name>/blobs/uploads/ (spec end-4a,
end-4b, end-5, end-6, end-11, end-13)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from portside.api import guard, query, requests
from portside.api.origins import change_origin
from portside.metadata.base import Upload
from portside.registry.errors import NameInvalid
from portside.registry.names import Digest, parse_name


def _upload_headers(name: str, upload: Upload) -> dict[str, str]:
    # Range is inclusive; an empty upload reports 0-0, as distribution does.
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload.id}",
        "Range": f"0-{max(upload.offset - 1, 0)}",
        "Docker-Upload-UUID": upload.id,
        "Content-Length": "0",
    }


def _created(name: str, digest: Digest) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        },
    )


async def start_upload(request: Request) -> Response:
    """A new upload (202), a monolithic upload with ?digest= (201), or a mount (201, else 202)."""
    registry = requests.registry(request)
    name = requests.name(request)
    requests.refuse_cache_push(registry, name)
    if query.has(request.scope, "mount"):
        digest = requests.digest_param(request, "mount")
        source = query.one(request.scope, "from")
        if source is not None:
            try:
                source = parse_name(source)
            except NameInvalid:
                source = None
        # spec: a registry that cannot mount "MUST" fall back to a new upload (202); so does a
        # mount from a repository the caller may not pull (decided by the auth gate).
        if (
            source is not None
            and not guard.admission(request.scope).mount_refused
            and await registry.uploads.mount(name, digest, source, change_origin(request))
            is not None
        ):
            return _created(name, digest)
    elif query.has(request.scope, "digest"):
        digest = requests.digest_param(request)
        length = requests.content_length(request)
        body = requests.body(request)
        await registry.uploads.upload(name, digest, body, length, change_origin(request))
        return _created(name, digest)
    upload = await registry.uploads.start(name)
    return Response(status_code=202, headers=_upload_headers(name, upload))


async def get_upload(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    upload = await registry.uploads.get(name, request.path_params["upload_id"])
    return Response(status_code=204, headers=_upload_headers(name, upload))


async def patch_upload(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    upload_id = request.path_params["upload_id"]
    span = requests.content_range(request)
    start, length = span if span is not None else (None, requests.content_length(request))
    upload = await registry.uploads.append(name, upload_id, requests.body(request), start, length)
    return Response(status_code=202, headers=_upload_headers(name, upload))


async def finish_upload(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    upload_id = request.path_params["upload_id"]
    await registry.uploads.get(name, upload_id)  # an unknown upload outranks a missing digest
    digest = requests.digest_param(request)
    span = requests.content_range(request)
    start, length = span if span is not None else (None, requests.content_length(request))
    body = requests.body(request)
    origin = change_origin(request)
    await registry.uploads.finish(name, upload_id, digest, body, start, length, origin)
    return _created(name, digest)


async def cancel_upload(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    await registry.uploads.cancel(name, request.path_params["upload_id"])
    return Response(status_code=204, headers={"Content-Length": "0"})
