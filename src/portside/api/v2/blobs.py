"""GET, HEAD and DELETE /v2/<name>/blobs/<digest> (spec end-2, end-10). With `storage_redirect`,
a GET answers 307 with a short-lived URL of the object store instead of the bytes."""

from __future__ import annotations

import re
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from portside.api import requests
from portside.api.origins import change_origin, pull_origin
from portside.registry.blobs import BlobContent
from portside.registry.errors import BlobUnknown, DeleteDisabled
from portside.registry.mirror import LiveBlob
from portside.registry.names import Digest
from portside.registry.service import Registry

BYTES_RANGE: Final = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
PATHSEND: Final = "http.response.pathsend"


class Unsatisfiable(Exception):
    """A Range that selects no byte of the blob: 416 with `Content-Range: bytes */<size>`."""


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end), inclusive, of a single byte range, or None to send everything. Other forms
    (several ranges, other units) are ignored, as RFC 9110 allows."""
    if header is None:
        return None
    match = BYTES_RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(match[1])
    end = int(match[2]) if match[2] else size - 1
    if start >= size or end < start:
        raise Unsatisfiable
    return start, min(end, size - 1)


class BlobResponse(Response):
    """Sends a blob: the whole file through the server's pathsend when it has one (no copy
    through Python), else a stream from the store."""

    def __init__(
        self,
        registry: Registry,
        content: BlobContent,
        status_code: int,
        headers: dict[str, str],
        span: tuple[int, int] | None,
        send_body: bool,
    ) -> None:
        super().__init__(status_code=status_code, headers=headers)
        self._registry = registry
        self._content = content
        self._span = span
        self._send_body = send_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = {"type": "http.response.start", "status": self.status_code}
        await send({**status, "headers": self.raw_headers})
        if not self._send_body:
            await send({"type": "http.response.body", "body": b""})
            return
        path = self._content.path
        if self._span is None and path is not None and PATHSEND in scope.get("extensions", {}):
            await send({"type": PATHSEND, "path": str(path)})
            return
        start, end = self._span or (0, self._content.size - 1)
        async for chunk in self._registry.blobs.read(self._content, start, end - start + 1):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


class LiveBlobResponse(Response):
    """Sends a blob as a pull-through cache fetches it from the upstream, while it is stored."""

    def __init__(self, live: LiveBlob, headers: dict[str, str]) -> None:
        super().__init__(status_code=200, headers=headers)
        self._live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        async for chunk in self._live.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _open(
    request: Request, registry: Registry, name: str, digest: Digest
) -> BlobContent | Response:
    """The blob in name. For a pull-through cache's name, a blob not stored yet is fetched from
    the upstream: a GET gets the bytes as they arrive (a Response), when it can follow the fetch;
    a HEAD waits for it too (a client that sees the blob there will not push it, so it must be
    readable here)."""
    mirror = registry.mirror
    route = mirror.route(name) if mirror is not None else None
    try:
        content = await registry.blobs.open(name, digest)
    except BlobUnknown:
        if route is None or mirror is None:
            raise
    else:
        if route is not None:
            requests.note_cache(request, "hit", str(route.upstream.url))
        return content
    upstream = str(route.upstream.url)
    if request.method == "GET" and request.headers.get("range") is None:
        live = await mirror.open_blob(route, name, digest)
        requests.note_cache(request, "miss", upstream, None if live is None else live.size)
        if live is not None:
            return _live_response(live, digest)
    else:
        await mirror.blob_size(route, name, digest)
        requests.note_cache(request, "miss", upstream)
    return await registry.blobs.open(name, digest)


def _live_response(live: LiveBlob, digest: Digest) -> Response:
    """The bytes of a blob as the upstream sends them to a pull-through cache."""
    headers = {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "ETag": f'"{digest}"',
    }
    if live.size is not None:
        headers["Content-Length"] = str(live.size)
    return LiveBlobResponse(live, headers)


async def get_blob(request: Request) -> Response:
    registry = requests.registry(request)
    name = requests.name(request)
    digest = Digest.parse(request.path_params["digest"])
    content = await _open(request, registry, name, digest)
    if isinstance(content, Response):
        return content
    if request.method == "GET" and (origin := pull_origin(request)) is not None:
        registry.blobs.pulled(name, content, origin)
    if request.method == "GET" and (location := registry.blobs.redirect_url(content)):
        # The object store serves the bytes, Range included; HEAD still answers here.
        return Response(
            status_code=307, headers={"Location": location, "Docker-Content-Digest": str(digest)}
        )
    headers = {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }
    try:
        span = _range(request.headers.get("range"), content.size)
    except Unsatisfiable:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{content.size}"})
    if span is None:
        headers["Content-Length"] = str(content.size)
        status = 200
    else:
        start, end = span
        headers["Content-Length"] = str(end - start + 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{content.size}"
        status = 206
    send_body = request.method != "HEAD"
    return BlobResponse(registry, content, status, headers, span, send_body)


async def delete_blob(request: Request) -> Response:
    if not request.app.state.delete_enabled:
        raise DeleteDisabled()
    registry = requests.registry(request)
    name = requests.name(request)
    digest = Digest.parse(request.path_params["digest"])
    await registry.blobs.delete(name, digest, change_origin(request))
    return Response(status_code=202, headers={"Content-Length": "0"})
