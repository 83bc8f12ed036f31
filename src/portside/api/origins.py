"""Who made a request, from where and through which: the Origin that the registry's events and
audit entries carry. Built only where something is recorded (registry.events says when)."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from starlette.requests import HTTPConnection, Request

from portside.api import requests
from portside.api.credentials import client_address
from portside.api.guard import actor
from portside.api.urls import PublicAddress
from portside.registry.events import Origin, Recorder

# Pull origins kept, by all that makes them; all are forgotten beyond this many.
PULL_ORIGINS_MAX: Final = 1024
# The headers that origin() reads (directly, or through client_address and base_url): a pull
# origin's key holds these and no other, so no client's credentials are kept with it.
ORIGIN_HEADERS: Final = frozenset(
    {
        b"host",
        b"user-agent",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
    }
)
_pull_origins: dict[tuple[object, ...], Origin] = {}


def origin(connection: HTTPConnection, public: PublicAddress) -> Origin:
    headers = connection.headers
    return Origin(
        actor=actor(connection.scope),
        address=client_address(connection.scope, public.trust_forwarded_headers),
        host=headers.get("host", ""),
        method=connection.scope.get("method", ""),
        user_agent=headers.get("user-agent", ""),
        base_url=public.base_url(connection),
    )


def change_origin(request: Request) -> Origin | None:
    """The request's Origin where its changes are recorded; None where nothing is."""
    if not requests.registry(request).events.active:
        return None
    return origin(request, request.app.state.public_address)


def pull_origin(request: Request) -> Origin | None:
    """The request's Origin where pulls are sent to an endpoint; None where none wants them.
    A client pulls many times alike: its pulls share one Origin, found again by what origin()
    reads, without a request id (their events make their own)."""
    if not requests.registry(request).events.pulls:
        return None
    scope = request.scope
    public = request.app.state.public_address
    client = scope.get("client")  # its address, not its port: a client opens many connections
    key = (
        public,
        actor(scope),
        scope.get("method"),
        scope.get("scheme"),
        client[0] if client else None,
        scope.get("server"),
        tuple(pair for pair in scope["headers"] if pair[0].lower() in ORIGIN_HEADERS),
    )
    found = _pull_origins.get(key)
    if found is None:
        if len(_pull_origins) >= PULL_ORIGINS_MAX:
            _pull_origins.clear()
        found = _pull_origins[key] = replace(origin(request, public), request_id=None)
    return found


def note_login(
    events: Recorder,
    connection: HTTPConnection,
    public: PublicAddress,
    username: str,
    outcome: str,
    via: str,
) -> None:
    """Audit a login by username (`login`, `login-failed` or `login-throttled`) and where it
    came through (`basic`, `token`)."""
    if events.notes:
        caller = replace(origin(connection, public), actor=username)
        events.note(outcome, caller, detail={"via": via})
