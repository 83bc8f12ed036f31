"""The access each route declares (api/routes.py): every route has one, and requests map to the
actions distribution asks for, ambiguous paths included."""

from __future__ import annotations

import pytest
from starlette.routing import BaseRoute, Match

from portside.api.guard import Guarded, Need
from portside.api.routes import ROUTES, routes
from portside.server.gate import ACTIONS, CATALOG_ACCESS


@pytest.mark.parametrize("table", [ROUTES, routes("/auth/token")], ids=["plain", "token"])
def test_every_route_declares_its_access(table: list[BaseRoute]) -> None:
    assert all(isinstance(route, Guarded) for route in table)
    assert all(isinstance(route.access, Need) for route in table if isinstance(route, Guarded))


def test_the_token_endpoint_checks_its_own_credentials() -> None:
    token_routes = [r for r in routes("/auth/token") if isinstance(r, Guarded)][:2]
    assert [(r.path, r.access) for r in token_routes] == [("/auth/token", Need.OPEN)] * 2


def scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def match(method: str, path: str) -> tuple[Guarded, dict[str, object]] | None:
    """The route the router takes, as Starlette's Router does: the first full match."""
    for route in ROUTES:
        matched, child = route.matches(scope(method, path))
        if matched is Match.FULL:
            assert isinstance(route, Guarded)
            return route, child["path_params"]
    return None


@pytest.mark.parametrize(
    ("method", "path", "expected", "name"),
    [
        ("GET", "/", Need.OPEN, None),
        ("GET", "/v1/_ping", Need.OPEN, None),
        ("GET", "/v1/search", Need.SEARCH, None),
        ("GET", "/v2/", Need.LOGIN, None),
        ("GET", "/v2/_catalog", Need.CATALOG, None),
        ("GET", "/v2/a/b/manifests/latest", {"pull"}, "a/b"),
        ("HEAD", "/v2/a/b/manifests/latest", {"pull"}, "a/b"),
        ("GET", "/v2/a/blobs/sha256:00", {"pull"}, "a"),
        ("HEAD", "/v2/a/blobs/sha256:00", {"pull"}, "a"),
        ("GET", "/v2/a/tags/list", {"pull"}, "a"),
        ("GET", "/v2/a/referrers/sha256:00", {"pull"}, "a"),
        ("PUT", "/v2/a/manifests/latest", {"pull", "push"}, "a"),
        ("POST", "/v2/a/blobs/uploads/", {"pull", "push"}, "a"),
        ("GET", "/v2/a/blobs/uploads/1234", {"pull", "push"}, "a"),
        ("PATCH", "/v2/a/blobs/uploads/1234", {"pull", "push"}, "a"),
        ("PUT", "/v2/a/blobs/uploads/1234", {"pull", "push"}, "a"),
        ("DELETE", "/v2/a/blobs/uploads/1234", {"pull", "push"}, "a"),
        ("DELETE", "/v2/a/manifests/sha256:00", {"delete"}, "a"),
        ("DELETE", "/v2/a/blobs/sha256:00", {"delete"}, "a"),
        # distribution's routes_test.go: names that look like other routes' parts
        ("GET", "/v2/foo/bar/manifests/manifests/tags", {"pull"}, "foo/bar/manifests"),
        ("GET", "/v2/foo/manifests/tags/list", {"pull"}, "foo/manifests"),
        ("PUT", "/v2/blobs/uploads/manifests/x", {"pull", "push"}, "blobs/uploads"),
        ("GET", "/v2/_catalog/tags/list", {"pull"}, "_catalog"),
    ],
)
def test_requests_map_to_their_requirement(
    method: str, path: str, expected: Need | set[str], name: str | None
) -> None:
    found = match(method, path)
    assert found is not None
    route, params = found
    if isinstance(expected, Need):
        assert route.access is expected
    else:
        assert set(ACTIONS[route.access]) == expected
    assert params.get("name") == name


def test_only_the_upload_start_checks_a_mount() -> None:
    assert [r.endpoint.__name__ for r in ROUTES if getattr(r, "access", None) is Need.MOUNT] == [
        "start_upload"
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nowhere"), ("POST", "/v2/a/manifests/x"), ("DELETE", "/v2/"), ("GET", "/v2")],
)
def test_requests_the_router_refuses_match_nothing(method: str, path: str) -> None:
    assert match(method, path) is None


def test_the_catalog_scope_is_distributions() -> None:
    assert CATALOG_ACCESS.scope == "registry:catalog:*"
