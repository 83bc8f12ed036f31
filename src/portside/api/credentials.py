"""Credentials a request carries in its Authorization header (RFC 7617 Basic, RFC 6750 Bearer).

Parsed values are secrets: nothing here logs them, and callers must not either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Basic:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Bearer:
    token: str = field(repr=False)


class Malformed:
    """An Authorization header that is neither a well-formed Basic nor a Bearer one."""


MALFORMED = Malformed()
EMPTY_BASIC = base64.b64encode(b":").decode()

Credentials = Basic | Bearer | Malformed


def parse_authorization(value: str | None) -> Credentials | None:
    """The credentials of an Authorization header's value; None without one."""
    if value is None:
        return None
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    scheme = scheme.lower()
    if scheme == "bearer" and rest:
        return Bearer(rest)
    if scheme == "basic":
        # containers/image (podman, skopeo) answers a Basic challenge with an empty username and
        # password when it has none: that is no credentials, not wrong ones.
        if rest == EMPTY_BASIC:
            return None
        return basic(rest) or MALFORMED
    return MALFORMED


def basic(encoded: str) -> Basic | None:
    """base64 of `username:password` (UTF-8, as RFC 7617's charset="UTF-8" asks), else None."""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        return None
    return Basic(username, password)


def client_address(scope: Mapping[str, Any], trust_forwarded_headers: bool) -> str:
    """The client's address, for failed-login limits: the peer's, or behind a trusted reverse
    proxy the last X-Forwarded-For value (the one the proxy next to us wrote)."""
    if trust_forwarded_headers:
        forwarded = [
            value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name.lower() == b"x-forwarded-for"
        ]
        last = ",".join(forwarded).rpartition(",")[2].strip()
        if last:
            return last
    client = scope.get("client")
    return str(client[0]) if client else "-"
