"""The query parameters and the Authorization header that decide what a request does, each read
here and nowhere else.

A value given twice is refused, not resolved: when the permission check took the first `from` of
a mount and the handler the last, a caller checked on one repository was served another. The auth
gate and the handlers both read through `one()` and `authorization()`, on one parse per request.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl

from starlette.types import Scope

from portside.registry.errors import (
    DigestInvalid,
    NameInvalid,
    PaginationNumberInvalid,
    QueryInvalid,
    RegistryError,
    Unauthorized,
)

# The error a repeated parameter gets: the one its bad value would get, where there is one.
REPEATED: Final[dict[str, type[RegistryError]]] = {
    "digest": DigestInvalid,
    "mount": DigestInvalid,
    "from": NameInvalid,
    "n": PaginationNumberInvalid,
}
PARSED: Final = "portside.query"  # the scope key of the parse, made once per request


def _params(scope: Scope) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] | None = scope.get(PARSED)
    if parsed is None:
        # As Starlette's QueryParams parses, so that nothing else could read it differently.
        parsed = {}
        query = scope.get("query_string", b"").decode("latin-1")
        for key, value in parse_qsl(query, keep_blank_values=True):
            parsed.setdefault(key, []).append(value)
        scope[PARSED] = parsed
    return parsed


def has(scope: Scope, name: str) -> bool:
    return name in _params(scope)


def one(scope: Scope, name: str) -> str | None:
    """The value of a parameter given at most once; None when absent."""
    values = _params(scope).get(name)
    if values is None:
        return None
    if len(values) > 1:
        error = REPEATED.get(name, QueryInvalid)
        raise error({"parameter": name, "reason": "given more than once"})
    return values[0]


def authorization(scope: Scope) -> bytes | None:
    """The Authorization header's value; a request with two is refused (which would count?)."""
    found = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if found is not None:
                raise Unauthorized({"reason": "more than one Authorization header"})
            found = value
    return found
