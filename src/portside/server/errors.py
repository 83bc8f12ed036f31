"""Registry errors to the spec's JSON envelope: the only place an error's HTTP status is chosen."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portside.registry.errors import (
    ErrorCode,
    QueryInvalid,
    RegistryError,
    TokenRequestInvalid,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unsupported,
    UploadOutOfOrder,
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
}
# The spec's few per-endpoint exceptions to the table above.
STATUS_OVERRIDES: Final[Mapping[type[RegistryError], int]] = {
    UploadOutOfOrder: 416,
    TooLarge: 413,
    TokenRequestInvalid: 400,
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
    if isinstance(error, TooManyRequests) and error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return Response(
        envelope(error.code, error.message, error.detail),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)  # as starlette/middleware/exceptions.py does
    return error_response(exc)


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
