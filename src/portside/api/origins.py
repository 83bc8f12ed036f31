"""Who made a request, from where and through which: the Origin that the registry's events and
audit entries carry. Built only where something is recorded (registry.events says when)."""

from __future__ import annotations

from dataclasses import replace

from starlette.requests import HTTPConnection, Request

from portside.api import requests
from portside.api.credentials import client_address
from portside.api.guard import actor
from portside.api.urls import PublicAddress
from portside.registry.events import Origin, Recorder


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
    """The request's Origin where pulls are sent to an endpoint; None where none wants them."""
    if not requests.registry(request).events.pulls:
        return None
    return origin(request, request.app.state.public_address)


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
