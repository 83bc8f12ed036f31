"""Bearer tokens from an upstream's token service (distribution's token specification): which
realms may see our credentials, fetching a token, and caching it until shortly before it expires.

Credentials go to a realm only on the upstream's own origin (same scheme, host and port) or on a
host the operator allowed (e.g. auth.docker.io for registry-1.docker.io), and not over plain http
when the upstream is https. Any other realm is asked anonymously: a registry must not be able to
collect our password by naming a realm of its choice (CVE-2026-33540 in distribution's proxy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Final

import httpx

from portside.upstream.errors import UpstreamInvalid, UpstreamNotFound
from portside.upstream.responses import error_for, origin, read_limited

DEFAULT_EXPIRES_IN: Final = 60.0
# A token is not used in its last seconds, so that it does not expire on the way.
EXPIRY_MARGIN: Final = 10.0
TOKEN_RESPONSE_LIMIT: Final = 1024 * 1024


def realm_url(realm: str) -> httpx.URL:
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL as error:
        raise UpstreamInvalid(f"token realm is not a URL: {error}") from error
    if url.scheme not in ("http", "https") or not url.host:
        raise UpstreamInvalid("token realm is not an http(s) URL")
    return url


def may_send_credentials(
    realm: httpx.URL, upstream: httpx.URL, allowed_hosts: Collection[str]
) -> bool:
    """Whether the realm may see the upstream's credentials. `allowed_hosts` holds `host` (default
    port) or `host:port` entries."""
    if origin(realm) == origin(upstream):
        return True
    if realm.scheme != "https" and upstream.scheme == "https":
        return False
    name = realm.host if realm.port is None else f"{realm.host}:{realm.port}"
    return name in allowed_hosts


async def request_token(
    client: httpx.AsyncClient,
    realm: httpx.URL,
    *,
    service: str | None,
    scope: str,
    authorization: str | None,
) -> tuple[str, float]:
    """A token and its lifetime in seconds from the realm, sending `authorization` if given."""
    params = {"scope": scope} if service is None else {"service": service, "scope": scope}
    headers = {} if authorization is None else {"Authorization": authorization}
    request = client.build_request("GET", realm.copy_merge_params(params), headers=headers)
    response = await client.send(request, stream=True)
    try:
        if response.status_code != 200:
            error = await error_for(response)
            if isinstance(error, UpstreamNotFound):
                error = UpstreamInvalid(f"token service: {error}")
            raise error
        body = await read_limited(response, TOKEN_RESPONSE_LIMIT, "token response")
    finally:
        await response.aclose()
    return _parse(body)


def _parse(body: bytes) -> tuple[str, float]:
    try:
        answer = json.loads(body)
    except ValueError as error:
        raise UpstreamInvalid("token response is not JSON") from error
    if not isinstance(answer, dict):
        raise UpstreamInvalid("token response is not a JSON object")
    token = answer.get("token") or answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise UpstreamInvalid("token response has no token")
    expires_in = answer.get("expires_in", DEFAULT_EXPIRES_IN)
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN
    return token, float(expires_in)


class TokenCache:
    """Tokens by scope, each until EXPIRY_MARGIN (or half its life, if shorter) before it
    expires. Expired tokens are dropped whenever one is stored."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}

    def get(self, scope: str) -> str | None:
        found = self._tokens.get(scope)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def put(self, scope: str, token: str, expires_in: float, obtained_at: float) -> None:
        usable_until = obtained_at + max(expires_in - EXPIRY_MARGIN, expires_in / 2)
        now = self._clock()
        self._tokens = {s: entry for s, entry in self._tokens.items() if entry[1] > now}
        self._tokens[scope] = (token, usable_until)

    def drop(self, scope: str) -> None:
        self._tokens.pop(scope, None)
