"""What the handlers read from a request: the repository name, digests, ranges, bodies, paging."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Final

from starlette.requests import Request

from portside.api import query
from portside.registry.errors import (
    Denied,
    PaginationNumberInvalid,
    TooLarge,
    UploadOutOfOrder,
)
from portside.registry.names import Digest, parse_name
from portside.registry.service import Registry

CONTENT_RANGE: Final = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?")


def registry(request: Request) -> Registry:
    found: Registry = request.app.state.registry
    return found


def name(request: Request) -> str:
    return parse_name(request.path_params["name"])


def digest_param(request: Request, field: str = "digest") -> Digest:
    return Digest.parse(query.one(request.scope, field) or "")


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def content_range(request: Request) -> tuple[int, int] | None:
    """The (start, length) of a chunk's `Content-Range: <start>-<end>`, if the request has one."""
    value = request.headers.get("content-range")
    if value is None:
        return None
    match = CONTENT_RANGE.fullmatch(value.strip())
    if match is None or int(match[2]) < int(match[1]):
        raise UploadOutOfOrder({"content-range": value[:100], "reason": "malformed"})
    start, end = int(match[1]), int(match[2])
    return start, end - start + 1


def body(request: Request) -> AsyncIterator[bytes]:
    return request.stream()


async def small_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes limit."""
    length = content_length(request)
    if length is not None and length > limit:
        raise TooLarge({"limit": limit, "length": length})
    parts: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge({"limit": limit})
        parts.append(chunk)
    return b"".join(parts)


def paging(request: Request) -> tuple[int | None, str | None]:
    """The `n` and `last` query parameters of a listing."""
    n = query.one(request.scope, "n")
    if n is not None and not _is_number(n):
        raise PaginationNumberInvalid({"n": n[:20]})
    return (None if n is None else int(n)), query.one(request.scope, "last") or None


def _is_number(value: str) -> bool:
    # ASCII only: "²".isdigit() is true, but int() refuses it.
    return value.isascii() and value.isdigit() and len(value) <= 9


def page_number(request: Request, field: str, default: int) -> int:
    """A positive number from the query (`n`, `page` of /v1/search), default when absent."""
    value = query.one(request.scope, field)
    if value is None:
        return default
    if not _is_number(value) or int(value) == 0:
        raise PaginationNumberInvalid({field: value[:20]})
    return int(value)


def refuse_cache_push(registry: Registry, name: str) -> None:
    """DENIED for a push into a pull-through cache's namespace (one that is not merged)."""
    reason = registry.mirror.refuses_push(name) if registry.mirror is not None else None
    if reason is not None:
        raise Denied({"name": name, "reason": reason})


# The scope key of a dict the access log middleware gives each request, for what a handler adds
# to its line (a scope key, not request state: state is copied on its way to the handler).
LOG_NOTES: Final = "portside.log_notes"


def note_cache(request: Request, outcome: str, upstream: str, fetched: int | None = None) -> None:
    """Tell the access log how the pull-through cache served this request: hit, miss, stale
    or revalidated, from which upstream, and the bytes fetched from it."""
    notes: dict[str, str] | None = request.scope.get(LOG_NOTES)
    if notes is None:
        return
    notes["cache"] = outcome
    notes["upstream"] = upstream
    if fetched is not None:
        notes["fetched"] = str(fetched)
