"""The UI's static files (static/), read once from the package and served with a content hash
in their URLs, so that browsers may keep them for a year and never see a stale one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

CONTENT_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
IMMUTABLE: Final = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    content: bytes
    content_type: str
    version: str  # a hash of the content


def _load() -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in files("portside.api.ui").joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in CONTENT_TYPES:
            content = entry.read_bytes()
            version = hashlib.sha256(content).hexdigest()[:16]
            found[entry.name] = Asset(content, CONTENT_TYPES[suffix], version)
    return found


ASSETS: Final = _load()


def url(name: str) -> str:
    """The URL of a static file, with its version."""
    return f"/ui/static/{name}?v={ASSETS[name].version}"


async def get_asset(request: Request) -> Response:
    asset = ASSETS.get(request.path_params["file"])
    if asset is None:
        return Response("not found\n", status_code=404, media_type="text/plain")
    headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    return Response(asset.content, media_type=asset.content_type, headers=headers)
