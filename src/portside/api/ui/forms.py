"""The form bodies of the UI's changes (login, logout, delete): small, URL-encoded, each field
given once, and carrying the visitor's CSRF token; a request from another site's page (its
Origin header says so) is refused even with one."""

from __future__ import annotations

import secrets
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from portside.api import requests
from portside.api.ui.rendering import UiError
from portside.api.ui.visitors import Visitor, ui

FORM_MAX: Final = 16 * 1024
FIELDS_MAX: Final = 20
URLENCODED: Final = "application/x-www-form-urlencoded"


async def read_form(request: Request, visitor: Visitor) -> dict[str, str]:
    """The form's fields, once its CSRF token and origin are checked (403 otherwise)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != URLENCODED:
        raise UiError(415, f"A form is sent as {URLENCODED}.")
    body = await requests.small_body(request, FORM_MAX)
    try:
        pairs = (
            parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=True,
                max_num_fields=FIELDS_MAX,
            )
            if body
            else []
        )
    except (UnicodeDecodeError, ValueError):
        raise UiError(400, "The form could not be read.") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form or "\x00" in value:
            raise UiError(400, f"The form's {key} field is given twice or holds a NUL.")
        form[key] = value
    _check_origin(request)
    sent = form.get("csrf", "")
    if not secrets.compare_digest(sent.encode(), visitor.csrf.encode()):
        raise UiError(403, "This form has expired or did not come from this site: reload it.")
    return form


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:
        return  # older browsers send none on same-origin posts; the token decides
    ours = {urlsplit(ui(request).public.base_url(request)).netloc, request.headers.get("host")}
    if urlsplit(origin).netloc not in ours:
        raise UiError(403, "This form was sent from another site.")


def field(form: dict[str, str], name: str, limit: int = 1024) -> str:
    value = form.get(name, "")
    if not value or len(value) > limit:
        raise UiError(400, f"The form's {name} field is missing or too long.")
    return value


def local_path(value: str | None) -> str:
    """Where to go after a login: a path of the UI, never another site (//host, /\\host)."""
    if value and value.startswith("/ui/") and "\\" not in value and not urlsplit(value).netloc:
        return value
    return "/ui/"
