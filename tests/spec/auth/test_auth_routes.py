"""The route → access table (server/access.py): every route has an entry, and requests map to the
actions distribution asks for, ambiguous paths included."""

from __future__ import annotations

import pytest
from starlette.routing import Match, Route

from portside.api.routes import ROUTES
from portside.server.access import CATALOG_ACCESS, REQUIREMENTS, Need, match, requirement


def test_every_route_has_a_requirement() -> None:
    endpoints = [route.endpoint for route in ROUTES if isinstance(route, Route)]
    assert len(endpoints) == len(ROUTES)
    assert [e for e in endpoints if e not in REQUIREMENTS] == []


def test_an_endpoint_missing_from_the_table_is_denied() -> None:
    async def new_endpoint() -> None: ...

    assert requirement(new_endpoint) is Need.DENY


def scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


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
    found = match(scope(method, path))
    assert found is not None
    endpoint, params = found
    need = requirement(endpoint)
    assert need == (expected if isinstance(expected, Need) else frozenset(expected))
    assert params.get("name") == name


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nowhere"), ("POST", "/v2/a/manifests/x"), ("DELETE", "/v2/"), ("GET", "/v2")],
)
def test_requests_the_router_refuses_match_nothing(method: str, path: str) -> None:
    assert match(scope(method, path)) is None


def test_the_catalog_scope_is_distributions() -> None:
    assert CATALOG_ACCESS.scope == "registry:catalog:*"


def starlette_match(method: str, path: str) -> tuple[object, dict[str, object]] | None:
    for route in ROUTES:
        matched, child = route.matches(scope(method, path))
        if matched is Match.FULL:
            return child["endpoint"], child["path_params"]
    return None


PATHS = [
    "/",
    "/v1/_ping",
    "/v1/search",
    "/v2/",
    "/v2",
    "/v2/_catalog",
    "/v2//manifests/x",
    "/v2/a/manifests/",
    "/v2/a/manifests/x/",
    "/v2/a/manifests/x\n",
    "/v2/a/b/c/blobs/uploads/",
    "/v2/a/blobs/uploads/u/v",
    "/v2/a/blobs/uploads",
    "/v2/a/referrers/sha256:1",
    "/v2/a/tags/list/",
    "/v2/a/tags/list/tags/list",
    "/v2/manifests/manifests/manifests",
    "/v2/a/blobs/blobs/uploads/x",
    "/v2/ä/manifests/ü",
    "/v2/../manifests/x",
]
METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]


@pytest.mark.parametrize("method", METHODS)
def test_the_matcher_agrees_with_the_router(method: str) -> None:
    for path in PATHS:
        assert match(scope(method, path)) == starlette_match(method, path), (method, path)


def test_a_root_path_is_left_out_as_the_router_does() -> None:
    mounted = scope("GET", "/registry/v2/") | {"root_path": "/registry"}
    found = match(mounted)
    assert found is not None
    assert requirement(found[0]) is Need.LOGIN
