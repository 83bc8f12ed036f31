"""Reading upstream responses: bodies under a size limit, and the error each failure maps to."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from portside.upstream.errors import (
    UpstreamDenied,
    UpstreamError,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)

# An error body is read only this far: enough for the spec's envelope.
ERROR_BODY_LIMIT: Final = 64 * 1024
_NOT_FOUND_CODES: Final = frozenset({"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (the default one filled in): what must match for credentials."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


async def read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    """The whole body; UpstreamInvalid as soon as it is known to be longer than limit."""
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise UpstreamInvalid(f"{what} of {length} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise UpstreamInvalid(f"{what} is over the limit of {limit} bytes")
    return bytes(body)


def unavailable(error: httpx.TransportError) -> UpstreamUnavailable:
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "failed"
    try:
        url = error.request.url
    except RuntimeError:  # raised by httpx when the error has no request
        where = ""
    else:  # without the query, which may hold a signature
        where = f" {url.scheme}://{url.netloc.decode()}{url.path}"
    return UpstreamUnavailable(f"request{where} {kind}: {type(error).__name__} {error}".strip())


async def error_for(response: httpx.Response) -> UpstreamError:
    """The error for a response that is neither success nor redirect, its body read (a part)."""
    status = response.status_code
    try:
        body = await read_limited(response, ERROR_BODY_LIMIT, "error body")
    except UpstreamInvalid:
        body = b""
    code = _error_code(body)
    where = f"{response.request.method} {response.request.url.path}"
    message = f"{where}: {status}{f' {code}' if code else ''}"
    if status == 404 or code in _NOT_FOUND_CODES:
        return UpstreamNotFound(message)
    if status in (401, 403):
        return UpstreamDenied(message)
    if status == 429 or status >= 500:
        return UpstreamUnavailable(message, retry_after(response.headers.get("retry-after")))
    return UpstreamInvalid(f"unexpected answer to {message}")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - time.time(), 0.0)


def _error_code(body: bytes) -> str | None:
    """The first code of the spec's error envelope, if the body is one."""
    try:
        errors = json.loads(body)["errors"]
        code = errors[0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return code if isinstance(code, str) else None
