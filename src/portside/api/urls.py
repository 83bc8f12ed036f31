"""The registry's external address, for the few absolute URLs it sends (the token realm).

Relative URLs (Location, Link) need none of this and stay relative: RFC 7231 allows them, and they
are what keeps a registry working behind any proxy. Build every absolute URL on
`PublicAddress.base_url`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from starlette.requests import HTTPConnection

# A host name or IPv4 address, or a bracketed IPv6 address, with an optional port: nothing that
# could break out of a quoted header parameter such as the realm.
_HOST: Final = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)
_SCHEMES: Final = ("http", "https")
# RFC 7239: elements are separated by commas, pairs by semicolons, values may be quoted strings.
_ELEMENT: Final = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
_PAIR: Final = re.compile(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*?)\s*(?:;|$)')


@dataclass(frozen=True)
class PublicAddress:
    """Where clients reach the registry: the `public_url` and `trust_forwarded_headers` settings."""

    url: str | None = None
    trust_forwarded_headers: bool = False

    def base_url(self, request: HTTPConnection) -> str:
        """`scheme://host[:port]` (no trailing slash) that clients reach this registry at.

        `url` if set; else the scheme and host the reverse proxy reports, when its headers are
        trusted (X-Forwarded-Proto and X-Forwarded-Host, else the Forwarded header's `proto` and
        `host`; of several values the last, which the proxy next to us wrote); else the scheme
        the request came in with and its Host header. Malformed values are ignored.
        """
        if self.url is not None:
            return self.url
        scheme = host = None
        if self.trust_forwarded_headers:
            forwarded = _last_forwarded_element(request)
            scheme = _scheme(_last_value(request, "x-forwarded-proto") or forwarded.get("proto"))
            host = _host(_last_value(request, "x-forwarded-host") or forwarded.get("host"))
        scheme = scheme or _scheme(request.scope.get("scheme")) or "http"
        host = host or _host(request.headers.get("host")) or _server_host(request, scheme)
        return f"{scheme}://{host}"


def _last_value(request: HTTPConnection, name: str) -> str | None:
    values = ",".join(request.headers.getlist(name)).split(",")
    return values[-1].strip() or None


def _last_forwarded_element(request: HTTPConnection) -> dict[str, str]:
    elements = _ELEMENT.findall(",".join(request.headers.getlist("forwarded")))
    if not elements:
        return {}
    pairs: dict[str, str] = {}
    for key, value in _PAIR.findall(elements[-1]):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key.lower()] = value
    return pairs


def _scheme(value: str | None) -> str | None:
    value = value.lower() if value else None
    return value if value in _SCHEMES else None


def _host(value: str | None) -> str | None:
    return value if value and _HOST.fullmatch(value) else None


def _server_host(request: HTTPConnection, scheme: str) -> str:
    """The address the request came in on, for a request without a Host header (HTTP/1.0)."""
    server = request.scope.get("server")
    if not server:
        return "localhost"
    host, port = str(server[0]), int(server[1])  # granian gives the port as a string
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return host if port == default else f"{host}:{port}"
