"""Addresses in config: listen addresses (HOST:PORT), and base URLs: a scheme, a host and a
port, nothing more (the registry API and its upstreams' live at the root of their hosts)."""

from __future__ import annotations

from urllib.parse import urlsplit


def base_url(value: str, example: str = "https://registry.example.com") -> str:
    """`value` as scheme://host[:port], lower-case and without a trailing slash; ValueError
    naming what is wrong for anything more or less."""
    text = value.strip()
    if not text.isprintable() or any(char.isspace() for char in text):
        raise ValueError(f"expected a URL such as {example}, got {value!r} (a control character)")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected a URL such as {example}, got {value!r}")
    if parts.username is not None or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(
            f"expected only a scheme, a host and a port, got {value!r} (the registry API is at "
            f"the root of its host)"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number up to 65535
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}: {exc}") from None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def listen_address(value: str) -> str:
    """`value` if it is HOST:PORT with a port from 1 to 65535 (an IPv6 host in brackets);
    ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value
