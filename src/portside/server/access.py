"""What each endpoint requires of its caller: the one place routes meet scopes, as distribution's
`appendAccessRecords` (registry/handlers/app.go). The auth middleware reads it; handlers don't.

    endpoint                                        requires
    GET /  /v1/_ping                                nothing
    GET /v1/search                                  nothing (a login with search_requires_auth);
                                                    lists only what the caller may pull
    GET /v2/                                        a login (valid credentials of any user)
    GET /v2/_catalog                                registry:catalog:*; lists what it may pull
    GET|HEAD manifests, blobs; tags, referrers      repository:NAME:pull
    PUT manifest; POST, GET, PATCH, PUT, DELETE     repository:NAME:pull,push
      of blobs/uploads                              (+ pull on `from` to mount, else no mount)
    DELETE manifest, blob                           repository:NAME:delete

Upload status and cancel need push where distribution asks pull and delete: they act on an
upload in progress, which is part of a push, and a pusher may cancel its own upload.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, Final

from starlette.routing import BaseRoute, Match, Route
from starlette.types import Scope

from portside.api import v1
from portside.api.routes import ROUTES
from portside.api.v2 import base, blobs, discovery, manifests, uploads
from portside.auth.base import ALL, CATALOG, DELETE, PULL, PUSH, REGISTRY, Access


class Need(Enum):
    """What an endpoint requires beyond (or instead of) actions on its repository."""

    OPEN = "open"  # nothing: never looks at credentials
    SEARCH = "search"  # nothing, or a login with search_requires_auth; lists what it may pull
    LOGIN = "login"  # valid credentials of anyone
    CATALOG = "catalog"  # registry:catalog:*; lists what it may pull
    DENY = "deny"  # an endpoint missing from the table below: nobody, so a new one fails closed


Requirement = Need | frozenset[str]  # a Need, or the actions on the repository in the path

PULL_ONLY: Final = frozenset({PULL})
PULL_PUSH: Final = frozenset({PULL, PUSH})
DELETE_ONLY: Final = frozenset({DELETE})
CATALOG_ACCESS: Final = Access(REGISTRY, CATALOG, frozenset({ALL}))

REQUIREMENTS: Final[Mapping[Callable[..., Any], Requirement]] = {
    v1.banner: Need.OPEN,
    v1.ping: Need.OPEN,
    v1.search: Need.SEARCH,
    base.version_check: Need.LOGIN,
    discovery.list_catalog: Need.CATALOG,
    discovery.list_tags: PULL_ONLY,
    discovery.list_referrers: PULL_ONLY,
    manifests.get_manifest: PULL_ONLY,
    blobs.get_blob: PULL_ONLY,
    manifests.put_manifest: PULL_PUSH,
    uploads.start_upload: PULL_PUSH,
    uploads.get_upload: PULL_PUSH,
    uploads.patch_upload: PULL_PUSH,
    uploads.finish_upload: PULL_PUSH,
    uploads.cancel_upload: PULL_PUSH,
    manifests.delete_manifest: DELETE_ONLY,
    blobs.delete_blob: DELETE_ONLY,
}
# The endpoint whose `mount` query parameter also needs pull on `from`.
MOUNTS: Final = uploads.start_upload


Endpoint = Callable[..., Any]
SEEN_MAX: Final = 4096


class Matcher:
    """Finds the route the router will take, with one regular expression per method: the routes'
    own patterns as alternatives, in route order, so the first that matches is the router's first
    full match (a route with another method is a partial match, which the router passes over)."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        self.routes = routes
        self.plain = all(isinstance(route, Route) for route in routes)
        alternatives: dict[str, list[str]] = {}
        self._found: dict[str, tuple[Route, list[tuple[str, str]]]] = {}
        for index, route in enumerate(routes):
            if not isinstance(route, Route) or route.methods is None:
                self.plain = False
                continue
            group = f"r{index}"
            # Rename the route's groups so that every alternative's are unique.
            pattern = re.sub(r"\(\?P<(\w+)>", rf"(?P<{group}_\1>", route.path_regex.pattern)
            params = [(f"{group}_{name}", name) for name in route.param_convertors]
            self._found[group] = (route, params)
            for method in route.methods:
                alternatives.setdefault(method, []).append(f"(?P<{group}>{pattern})")
        self._by_method = {
            method: re.compile("|".join(patterns)) for method, patterns in alternatives.items()
        }
        # The same paths come again and again (a tag's manifest, a layer): remember the last few.
        self._seen: dict[tuple[str, str], tuple[Endpoint, Scope] | None] = {}

    def __call__(self, scope: Scope) -> tuple[Endpoint, Scope] | None:
        """The endpoint the router will call for this request and its path parameters (shared
        between requests: read them only), or None when it will answer 404 or 405."""
        if not self.plain:
            return self._slow(scope)
        key = (scope["method"], _route_path(scope))
        if key in self._seen:
            return self._seen[key]
        if len(self._seen) >= SEEN_MAX:
            self._seen.clear()
        found = self._seen[key] = self._match(*key)
        return found

    def _match(self, method: str, path: str) -> tuple[Endpoint, Scope] | None:
        regex = self._by_method.get(method)
        found = regex.match(path) if regex is not None else None
        if found is None or found.lastgroup is None:
            return None
        route, params = self._found[found.lastgroup]
        converters = route.param_convertors
        return route.endpoint, {
            name: converters[name].convert(found.group(group)) for group, name in params
        }

    def _slow(self, scope: Scope) -> tuple[Endpoint, Scope] | None:
        for route in self.routes:
            matched, child = route.matches(scope)
            if matched is Match.FULL:
                return child["endpoint"], child["path_params"]
        return None


match: Final = Matcher(ROUTES)


def _route_path(scope: Scope) -> str:
    """The path routes match against: without the app's root_path, as Starlette's router."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def requirement(endpoint: Callable[..., Any]) -> Requirement:
    return REQUIREMENTS.get(endpoint, Need.DENY)
