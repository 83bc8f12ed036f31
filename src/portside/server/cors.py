"""CORS for web pages that call the registry, configured as the classic registry's Flask-CORS.

It sits outside the auth middleware: a browser sends a preflight OPTIONS without credentials,
so a preflight that had to log in would fail every cross-origin call to a registry with auth on
(distribution#4458). The preflight says only which origins, methods and headers are allowed;
the request that follows is authenticated as any other.

Starlette's CORSMiddleware does the work; around it, what Flask-CORS did differently:
`resources` picks the paths, `automatic_options: false` leaves preflights to the registry,
origins `*` answer with the request's origin unless `send_wildcard`, and `always_send` marks
responses to requests without an Origin header too. Origins that look like regular expressions
(Flask-CORS's test: they hold one of `*\\]?$^[()`) must match the whole origin.
"""

from __future__ import annotations

import re
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portside.config.cors import CorsSettings

_REGEX_CHARS: Final = frozenset("*\\]?$^[()")
# What a browser assumes without an Access-Control-Max-Age header (the Fetch standard).
_BROWSER_MAX_AGE: Final = 5


class Cors:
    def __init__(self, app: ASGIApp, settings: CorsSettings) -> None:
        self.app = app
        self._paths = [re.compile(pattern) for pattern in settings.resources]
        self._preflights = settings.automatic_options
        any_origin = "*" in settings.origins
        self._mark_originless = any_origin and settings.always_send
        literal = [o for o in settings.origins if o != "*" and not _REGEX_CHARS & set(o)]
        patterns = [o for o in settings.origins if o != "*" and _REGEX_CHARS & set(o)]
        if any_origin and not settings.send_wildcard:
            patterns.append(".*")  # a pattern makes Starlette answer with the request's origin
        self._cors = CORSMiddleware(
            app,
            allow_origins=["*"] if any_origin and settings.send_wildcard else literal,
            allow_origin_regex="|".join(f"(?:{p})" for p in patterns) if patterns else None,
            allow_methods=settings.methods,
            allow_headers=settings.headers,
            allow_credentials=settings.supports_credentials,
            expose_headers=settings.expose_headers,
            max_age=_BROWSER_MAX_AGE if settings.max_age is None else settings.max_age,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(p.match(scope["path"]) for p in self._paths):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight and not self._preflights:
            await self.app(scope, receive, send)
            return
        if self._mark_originless and "origin" not in headers:
            send = _with_any_origin(send)
        await self._cors(scope, receive, send)


def _with_any_origin(send: Send) -> Send:
    async def marked(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message)["Access-Control-Allow-Origin"] = "*"
        await send(message)

    return marked
