"""Tests of portside.api.urls: the base URL that absolute URLs (the token realm) are built on."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from portside.api.urls import PublicAddress

DIRECT = PublicAddress()
TRUSTING = PublicAddress(trust_forwarded_headers=True)


def connection(
    *headers: tuple[str, str],
    scheme: str = "http",
    server: tuple[str, Any] | None = ("127.0.0.1", 5000),
    app: Starlette | None = None,
) -> HTTPConnection:
    scope: dict[str, Any] = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "path": "/v2/",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }
    if app is not None:
        scope["app"] = app
    return HTTPConnection(scope)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (connection(("Host", "registry.example.com")), "http://registry.example.com"),
        (connection(("Host", "127.0.0.1:5000"), scheme="https"), "https://127.0.0.1:5000"),
        (connection(("Host", "[::1]:5000")), "http://[::1]:5000"),
        (connection(("Host", "my_registry:5000")), "http://my_registry:5000"),
        # Without a usable Host header: the address the request came in on.
        (connection(), "http://127.0.0.1:5000"),
        (connection(scheme="https", server=("10.0.0.5", "443")), "https://10.0.0.5"),
        (connection(server=("::1", 80)), "http://[::1]"),
        (connection(server=None), "http://localhost"),
        (connection(("Host", 'evil" , x="y')), "http://127.0.0.1:5000"),
        (connection(("Host", "a/b")), "http://127.0.0.1:5000"),
        (connection(("Host", "user@host")), "http://127.0.0.1:5000"),
    ],
)
def test_without_public_url_the_request_names_the_address(
    request_: HTTPConnection, expected: str
) -> None:
    assert DIRECT.base_url(request_) == expected


FORWARDED_REQUESTS = [
    (("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "registry.example.com")),
    (("Forwarded", "for=192.0.2.60;proto=https;host=registry.example.com"),),
    (("Forwarded", 'For="[2001:db8:cafe::17]:4711";Proto=HTTPS;Host="registry.example.com"'),),
]


@pytest.mark.parametrize("headers", FORWARDED_REQUESTS)
def test_forwarded_headers_are_ignored_unless_trusted(headers: tuple[tuple[str, str]]) -> None:
    request = connection(("Host", "127.0.0.1:5000"), *headers)

    assert DIRECT.base_url(request) == "http://127.0.0.1:5000"
    assert TRUSTING.base_url(request) == "https://registry.example.com"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # Only the scheme forwarded: the Host header, which nginx passes on, gives the host.
        ((("X-Forwarded-Proto", "https"),), "https://127.0.0.1:8443"),
        ((("X-Forwarded-Host", "r.example:8443"),), "http://r.example:8443"),
        # Of several values, the last: the one the proxy next to Portside wrote.
        ((("X-Forwarded-Proto", "http, https"),), "https://127.0.0.1:8443"),
        (
            (("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Host", "r.example")),
            "http://r.example",
        ),
        (
            (("Forwarded", "host=evil.example;proto=http, host=r.example;proto=https"),),
            "https://r.example",
        ),
        ((("Forwarded", 'host="a,b", host=r.example'),), "http://r.example"),
        # X-Forwarded-* before Forwarded, field by field.
        (
            (("X-Forwarded-Proto", "https"), ("Forwarded", "proto=http;host=r.example")),
            "https://r.example",
        ),
        # Malformed values are ignored.
        ((("X-Forwarded-Proto", "javascript"),), "http://127.0.0.1:8443"),
        ((("X-Forwarded-Host", 'x" realm="evil'),), "http://127.0.0.1:8443"),
        ((("Forwarded", "garbage"),), "http://127.0.0.1:8443"),
        ((("Forwarded", 'host="unterminated'),), "http://127.0.0.1:8443"),
    ],
)
def test_trusted_forwarded_headers(headers: tuple[tuple[str, str]], expected: str) -> None:
    request = connection(("Host", "127.0.0.1:8443"), *headers)

    assert TRUSTING.base_url(request) == expected


@pytest.mark.parametrize("address", [DIRECT, TRUSTING])
def test_public_url_wins_over_everything(address: PublicAddress) -> None:
    request = connection(("Host", "127.0.0.1:5000"), *FORWARDED_REQUESTS[0], scheme="https")
    public = PublicAddress("https://registry.example.com", address.trust_forwarded_headers)

    assert public.base_url(request) == "https://registry.example.com"
