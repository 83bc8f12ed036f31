"""Pages from the templates, with the headers every UI response carries (a Content-Security-Policy
that allows this origin's scripts and styles only, no framing, no sniffing, no caching of pages
that show what a login may see), and the error pages.

Templates autoescape everything: names, labels and annotations are the clients' and may hold
markup; nothing is marked safe.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from portside.api.ui import assets
from portside.api.ui.sessions import secure, set_csrf_cookie
from portside.api.ui.visitors import Visitor, ui
from portside.registry.errors import ErrorCode, RegistryError

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# The pages a registry error a visitor can cause becomes, and what they say; any other error is
# the server's (a logged 500).
ERROR_PAGES: Final = {
    ErrorCode.NAME_INVALID: (400, "That is not a valid repository name."),
    ErrorCode.DIGEST_INVALID: (400, "That is not a valid digest."),
    ErrorCode.UNSUPPORTED: (400, "A query parameter is given more than once."),
    ErrorCode.PAGINATION_NUMBER_INVALID: (400, "A query parameter is given more than once."),
    ErrorCode.SIZE_INVALID: (413, "The form is too large."),
    ErrorCode.NAME_UNKNOWN: (404, "There is no such repository."),
    ErrorCode.MANIFEST_UNKNOWN: (404, "There is no such manifest or tag in this repository."),
}


NONE: Final = "\N{EN DASH}"  # what a table shows for a value not known


class UiError(Exception):
    """A request the UI answers with an error page: status and what to tell the visitor."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _size(value: int | None) -> str:
    """Bytes for people: 1.5 MB (powers of 1000, as registries and clients show them)."""
    if value is None:
        return NONE
    if value < 1000:
        return f"{value} B"
    amount = float(value)
    for unit in ("kB", "MB", "GB", "TB"):
        amount /= 1000
        if amount < 1000:
            return f"{amount:.1f} {unit}"
    return f"{amount / 1000:.1f} PB"


def _when(value: datetime | None) -> str:
    if value is None:
        return NONE
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _short(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}:{encoded[:12]}"


def _path(value: str) -> str:
    """A repository name or digest in a URL path: its grammar needs no escaping, but a stored
    name is quoted anyway."""
    return quote(value, safe="/:@")


def _query(values: Mapping[str, object]) -> str:
    return urlencode({key: value for key, value in values.items() if value not in (None, "")})


ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("portside.api.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters.update(size=_size, when=_when, short=_short, path=_path, query=_query)
ENVIRONMENT.globals["static"] = assets.url


def render(
    request: Request,
    visitor: Visitor,
    template: str,
    context: Mapping[str, Any],
    status: int = 200,
) -> HTMLResponse:
    state = ui(request)
    html = ENVIRONMENT.get_template(template).render(
        visitor=visitor, logins=state.logins, request_path=request.url.path, **context
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    if visitor.new_csrf_cookie:
        set_csrf_cookie(response, visitor.csrf, secure(request, state.public))
    return response


def redirect(location: str, headers: Mapping[str, str] | None = None) -> Response:
    """303 See Other: the answer to a form's POST, so that a reload does not post it again."""
    return Response(
        status_code=303, headers={**SECURITY_HEADERS, "Location": location, **(headers or {})}
    )


async def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    visitor = await ui(request).visitor(request)
    context = {"title": "Error", "status": status, "message": message}
    return render(request, visitor, "error.html", context, status)


Endpoint = Callable[[Request], Awaitable[Response]]


def page(endpoint: Endpoint) -> Endpoint:
    """An endpoint whose UiErrors, and the registry errors a visitor can cause, are error pages."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except UiError as error:
            response = await error_page(request, error.status, error.message)
        except RegistryError as error:
            found = ERROR_PAGES.get(error.code)
            if error.code is ErrorCode.DENIED:  # a policy's refusal: its message says why
                found = (403, error.describe())
            if found is None:
                raise
            response = await error_page(request, *found)
        return response

    return answer
