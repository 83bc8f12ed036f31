"""Registry errors to the spec's JSON envelope: the only place an error's HTTP status is chosen."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from portside.metadata.engine import DatabaseError, disk_full
from portside.registry.errors import (
    BlobUploadInvalid,
    ErrorCode,
    InsufficientStorage,
    ManifestInvalid,
    QueryInvalid,
    RegistryError,
    SizeInvalid,
    TokenRequestInvalid,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unsupported,
    UploadOutOfOrder,
    UpstreamUnavailable,
)

log = logging.getLogger("portside.server")

STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.BLOB_UNKNOWN: 404,
    ErrorCode.BLOB_UPLOAD_INVALID: 400,
    ErrorCode.BLOB_UPLOAD_UNKNOWN: 404,
    ErrorCode.DIGEST_INVALID: 400,
    ErrorCode.MANIFEST_BLOB_UNKNOWN: 404,
    ErrorCode.MANIFEST_INVALID: 400,
    ErrorCode.MANIFEST_UNKNOWN: 404,
    ErrorCode.NAME_INVALID: 400,
    ErrorCode.NAME_UNKNOWN: 404,
    ErrorCode.SIZE_INVALID: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.DENIED: 403,
    ErrorCode.UNSUPPORTED: 405,
    ErrorCode.TOOMANYREQUESTS: 429,
    ErrorCode.PAGINATION_NUMBER_INVALID: 400,
    ErrorCode.UNKNOWN: 500,
    ErrorCode.UNAVAILABLE: 503,
}
# The spec's few per-endpoint exceptions to the table above.
STATUS_OVERRIDES: Final[Mapping[type[RegistryError], int]] = {
    UploadOutOfOrder: 416,
    TooLarge: 413,
    TokenRequestInvalid: 400,
    InsufficientStorage: 507,
    QueryInvalid: 400,
}


def envelope(code: str, message: str, detail: object = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"errors": [error]}).encode()


def error_response(error: RegistryError) -> Response:
    status = STATUS_OVERRIDES.get(type(error), STATUS[error.code])
    headers = {}
    # spec: a 401 "MUST" carry WWW-Authenticate (RFC 7235); a 429 tells when to retry.
    if isinstance(error, Unauthorized) and error.challenge is not None:
        headers["WWW-Authenticate"] = error.challenge
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, TooManyRequests | UpstreamUnavailable) and retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response(
        envelope(error.code, error.describe(), error.detail),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)  # as starlette/middleware/exceptions.py does
    return error_response(exc)


# What a full disk raises: OSError ENOSPC or EDQUOT from a blob store, a database's "disk full".
STORAGE_ERRORS: Final[tuple[type[Exception], ...]] = (OSError, DatabaseError)
FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
# While the disk stays full, one warning per this many seconds, however many pushes fail.
FULL_LOG_SECONDS: Final = 60.0


def insufficient_storage(error: BaseException) -> InsufficientStorage | None:
    """The InsufficientStorage that error amounts to, when it or what it came from (its cause,
    its context: a cleanup that failed too) says the disk is full; else None."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            name = errno.errorcode[current.errno]
            return InsufficientStorage({"reason": os.strerror(current.errno), "errno": name})
        if disk_full(current):
            return InsufficientStorage({"reason": "the database's disk is full"})
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


class FullDiskLog:
    """One warning line when the disk is found full, then at most one per `seconds` while
    requests keep failing on it, with how many did: not a traceback per request."""

    def __init__(
        self, seconds: float = FULL_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._next = -float("inf")
        self._refused = 0

    def report(self, error: InsufficientStorage, method: str, path: str) -> None:
        self._refused += 1
        now = self._clock()
        if now < self._next:
            return
        reason = error.detail["reason"] if isinstance(error.detail, dict) else error.detail
        log.warning(
            "insufficient storage (%s): %d request(s) answered 507 since the last warning, the "
            "latest %s %s; reads go on, pushes work again once space is freed",
            reason,
            self._refused,
            method,
            path[:300],
        )
        self._refused, self._next = 0, now + self.seconds


full_disk_log = FullDiskLog()


async def storage_error(request: Request, exc: Exception) -> Response:
    """An OSError or database error: 507 in the spec's envelope when the disk is full; anything
    else goes on as it came, to be a 500 with its traceback."""
    full = insufficient_storage(exc)
    if full is None:
        raise exc
    full_disk_log.report(full, request.method, request.url.path)
    return error_response(full)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no route, wrong method), in the same envelope."""
    assert isinstance(exc, HTTPException)
    message = "no such endpoint" if exc.status_code == 404 else "method not allowed"
    return Response(
        envelope(Unsupported.code, message, {"path": request.url.path[:300]}),
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers,
    )


async def incomplete_body(request: Request, exc: Exception) -> Response:
    """The request body ended before it was whole: the client went away or half-closed mid-body,
    or sent a malformed chunked encoding (the server reports both as a disconnect). Nothing of
    it was kept (an upload's offset is unchanged); the answer, a 400, reaches a client that
    still reads."""
    assert isinstance(exc, ClientDisconnect)
    path = request.url.path
    declared = request.headers.get("content-length")
    log.info(
        "%s %s: the request body ended early (%s); nothing of it was kept",
        request.method,
        path[:300],
        f"Content-Length {declared[:20]}" if declared is not None else "chunked",
    )
    detail = {"reason": "the request body ended before it was complete"}
    error: RegistryError
    if declared is not None:
        error = SizeInvalid({**detail, "content-length": declared[:20]})
    elif "/manifests/" in path:
        error = ManifestInvalid(detail)
    else:
        error = BlobUploadInvalid(detail)
    return error_response(error)
