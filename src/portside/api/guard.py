"""What each route needs of its caller, declared where the route is defined (api/routes.py), and
the hook that checks it where the router matched it: `Guarded.handle` asks the gate the server
leaves in `app.state.gate` (None: an open registry) before the endpoint runs, as distribution's
`appendAccessRecords` (registry/handlers/app.go) does per route.

    access     needs
    OPEN       nothing: never looks at credentials
    SEARCH     nothing, or a login with search_requires_auth; lists only what it may pull
    LOGIN      valid credentials of any user
    CATALOG    registry:catalog:*; lists only what it may pull
    PULL       repository:NAME:pull
    PULL_PUSH  repository:NAME:pull,push
    MOUNT      PULL_PUSH, and pull on a mount's `from`, else the mount becomes a plain upload
    DELETE     repository:NAME:delete
    METRICS    an address of metrics.allow, or a login of metrics.users or .groups

A path no route matches gets its 404, and a method the path has no route for its 405, before
anything is checked. Every route is a Guarded one with its access (server/app.py refuses any
other), so an endpoint cannot be added without saying what it needs.

Each route has a name too, distribution's route names (registry/api/v2/routes.go) and Portside's
own: the `handler` label of the HTTP metrics. Once matched, a route tells its name to the
RouteObserver the server's middleware leaves in the scope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Protocol

from starlette.routing import Route
from starlette.types import Receive, Scope, Send


class Need(Enum):
    OPEN = "open"
    SEARCH = "search"
    LOGIN = "login"
    CATALOG = "catalog"
    PULL = "pull"
    PULL_PUSH = "pull,push"
    MOUNT = "pull,push+mount"
    DELETE = "delete"
    METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class Admission:
    """What the gate decided beyond letting the request in, for the handler to act on."""

    visible: Callable[[str], bool] | None = None  # a listing shows these; None: all
    mount_refused: bool = False  # the caller may not pull the `from` of its mount
    login_challenge: str | None = None  # an anonymous search that finds nothing answers it


ADMITTED: Final = Admission()
ADMISSION: Final = "portside.admission"  # the scope key Guarded.handle leaves it under
ROUTE_OBSERVER: Final = "portside.route_observer"  # the scope key of a RouteObserver
ACTOR: Final = "portside.actor"  # the scope key a gate leaves the caller's name under


class Gate(Protocol):
    async def admit(self, scope: Scope, need: Need) -> Admission:
        """Let the request in, or raise the RegistryError to answer it with."""


class RouteObserver(Protocol):
    def matched(self, name: str) -> None:
        """The router chose the route of this name for the request."""


class Guarded(Route):
    """A route with its name and the access it needs, checked by the app's gate once the route
    matched."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], methods: list[str], access: Need, name: str
    ) -> None:
        super().__init__(path, endpoint, methods=methods, name=name)
        self.access = access

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        observer: RouteObserver | None = scope.get(ROUTE_OBSERVER)
        if observer is not None:
            observer.matched(self.name)
        gate: Gate | None = scope["app"].state.gate
        if gate is not None and self.methods is not None and scope["method"] in self.methods:
            scope[ADMISSION] = await gate.admit(scope, self.access)
        await super().handle(scope, receive, send)


def actor(scope: Scope) -> str | None:
    """The name of the user (or token subject) the gate let in; None: anonymous."""
    found: str | None = scope.get(ACTOR)
    return found


def admission(scope: Scope) -> Admission:
    """What the gate decided for this request; everything allowed on an open registry."""
    found: Admission = scope.get(ADMISSION, ADMITTED)
    return found
