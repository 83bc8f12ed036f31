"""The HTTP metrics of an in-process registry: each route's `handler` label, what one request
adds (counts, durations, sizes, bytes, requests in flight), the cache's counts, the storage and
database timings, garbage collection, and who may read /metrics on a registry without auth
(tests/spec/auth/test_auth_metrics.py has it with auth).

Metrics are process-wide, and other tests count too: each test compares a scrape before with one
after."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Match

from portside.api.guard import Guarded
from portside.api.routes import routes
from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.metrics.export import exporter
from portside.registry.gc import Collector, Policy
from portside.server.app import create_app
from portside.server.metrics import Exchange
from portside.storage.filesystem import FilesystemBlobStore
from scrapes import Samples, grew, samples

BASE = "http://registry.test"


@pytest.mark.parametrize(
    ("method", "path", "handler"),
    [
        ("GET", "/", "banner"),
        ("GET", "/v1/_ping", "ping"),
        ("GET", "/v1/search", "search"),
        ("GET", "/v2/", "base"),
        ("GET", "/v2/_catalog", "catalog"),
        ("GET", "/v2/a/b/tags/list", "tags"),
        ("GET", "/v2/a/referrers/sha256:00", "referrers"),
        ("GET", "/v2/a/b/manifests/latest", "manifest"),
        ("HEAD", "/v2/a/manifests/latest", "manifest"),
        ("PUT", "/v2/a/manifests/latest", "manifest"),
        ("DELETE", "/v2/a/manifests/sha256:00", "manifest"),
        ("GET", "/v2/foo/bar/manifests/manifests/tags", "manifest"),  # distribution's ambiguity
        ("GET", "/v2/a/blobs/sha256:00", "blob"),
        ("HEAD", "/v2/a/blobs/sha256:00", "blob"),
        ("DELETE", "/v2/a/blobs/sha256:00", "blob"),
        ("POST", "/v2/a/blobs/uploads/", "blob_upload"),
        ("GET", "/v2/a/blobs/uploads/1234", "blob_upload_chunk"),
        ("PATCH", "/v2/a/blobs/uploads/1234", "blob_upload_chunk"),
        ("PUT", "/v2/a/blobs/uploads/1234", "blob_upload_chunk"),
        ("DELETE", "/v2/a/blobs/uploads/1234", "blob_upload_chunk"),
        ("GET", "/auth/token", "token"),
        ("POST", "/auth/token", "token"),
        ("GET", "/metrics", "metrics"),
        ("GET", "/debug/health", "health"),
        ("GET", "/livez", "livez"),
        ("GET", "/readyz", "readyz"),
    ],
)
def test_each_route_is_named_for_its_metrics_handler(method: str, path: str, handler: str) -> None:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    for route in routes("/auth/token", metrics=True):
        if route.matches(scope)[0] is Match.FULL:
            assert isinstance(route, Guarded)
            assert route.name == handler
            return
    pytest.fail(f"no route for {method} {path}")


# In-process requests -----------------------------------------------------------------------------


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Starlette]:
    count = 0

    def make(**overrides: Any) -> Starlette:
        nonlocal count
        count += 1
        storage = tmp_path / f"registry-{count}"
        storage.mkdir()
        settings = Settings(storage_path=storage, workers=1, **overrides)
        upgrade(settings.metadata_url)
        return create_app(settings)

    return make


@pytest.fixture
async def client(make_app: Callable[..., Starlette]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples(response.text)


async def test_a_push_and_a_pull_count_under_their_handlers(client: httpx.AsyncClient) -> None:
    blob = b"x" * 1000
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    before = await scrape(client)

    assert (await client.get("/v2/")).status_code == 200
    started = await client.post("/v2/team/app/blobs/uploads/")
    location = started.headers["location"]
    assert (await client.patch(location, content=blob)).status_code == 202
    finished = await client.put(location, params={"digest": digest})
    assert finished.status_code == 201
    assert (await client.get(f"/v2/team/app/blobs/{digest}")).content == blob
    assert (await client.head(f"/v2/team/app/blobs/{digest}")).status_code == 200
    assert (await client.get("/v2/team/app/manifests/latest")).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.request("BREW", "/v2/")).status_code == 405
    after = await scrape(client)

    counted = {
        (handler, method, code): grew(
            before, after, "registry_http_requests_total", handler=handler, method=method, code=code
        )
        for handler, method, code in [
            ("base", "GET", "200"),
            ("blob_upload", "POST", "202"),
            ("blob_upload_chunk", "PATCH", "202"),
            ("blob_upload_chunk", "PUT", "201"),
            ("blob", "GET", "200"),
            ("blob", "HEAD", "200"),
            ("manifest", "GET", "404"),
            ("unmatched", "GET", "404"),
            ("base", "other", "405"),
        ]
    }
    assert set(counted.values()) == {1.0}, counted
    duration = "registry_http_request_duration_seconds_count"
    assert grew(before, after, duration, handler="blob_upload_chunk", method="PATCH") == 1
    # Body sizes, the request's for a PATCH, the response's for a GET; a HEAD sends none.
    assert (
        grew(before, after, "registry_http_request_size_bytes_sum", handler="blob_upload_chunk")
        == 1000
    )
    assert grew(before, after, "registry_http_response_size_bytes_sum", handler="blob") == 1000
    assert (
        grew(before, after, "portside_http_received_bytes_total", handler="blob_upload_chunk")
        == 1000
    )
    assert grew(before, after, "portside_http_sent_bytes_total", handler="blob") == 1000
    # Every request is over: nothing in flight (the scrape itself counts in its own).
    assert after[("registry_http_in_flight_requests", frozenset({("handler", "blob")}))] == 0
    assert after[("portside_uploads_in_progress", frozenset())] == 0
    # The storage and the metadata database were timed on the way.
    storage = "registry_storage_action_seconds_count"
    assert grew(before, after, storage, driver="local", action="move") >= 1
    assert grew(before, after, storage, driver="local", action="writer") >= 1
    assert grew(before, after, "portside_metadata_query_seconds_count", kind="write") >= 1
    assert grew(before, after, "portside_metadata_query_seconds_count", kind="read") >= 1


async def test_a_request_counts_in_flight_until_its_response_is_sent(
    client: httpx.AsyncClient,
) -> None:
    started = await client.post("/v2/team/app/blobs/uploads/")
    seen: list[Samples] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 100
        exporter().flush()  # as the worker's periodic flush would, while the PATCH streams
        seen.append(samples(exporter().exposition()))
        yield b"y" * 100

    assert (await client.patch(started.headers["location"], content=body())).status_code == 202

    in_flight = seen[0][
        ("registry_http_in_flight_requests", frozenset({("handler", "blob_upload_chunk")}))
    ]
    assert in_flight == 1
    assert seen[0][("portside_uploads_in_progress", frozenset())] == 1


@pytest.mark.parametrize(
    ("outcome", "hits", "misses"),
    [("hit", 1, 0), ("revalidated", 1, 0), ("stale", 1, 0), ("miss", 0, 1), ("pass", 0, 0)],
)
def test_the_cache_counts_hits_and_misses_of_blobs_and_manifests(
    outcome: str, hits: int, misses: int
) -> None:
    before = samples(exporter().exposition())
    for handler in ("manifest", "blob", "tags"):
        exchange = Exchange("GET")
        exchange.matched(handler)
        exchange.finish(200, 0.01, 0, 300, {"cache": outcome})
    after = samples(exporter().exposition())

    for kind in ("manifest", "blob"):
        assert grew(before, after, "registry_proxy_hits_total", type=kind) == hits
        assert grew(before, after, "registry_proxy_misses_total", type=kind) == misses
        assert grew(before, after, "registry_proxy_requests_total", type=kind) == hits + misses
        assert grew(before, after, "registry_proxy_pushed_bytes_total", type=kind) == 300 * (
            hits + misses
        )
    assert grew(before, after, "registry_proxy_requests_total", type="tags") == 0


async def test_a_garbage_collection_run_counts_its_result_time_and_bytes(tmp_path: Path) -> None:
    settings = Settings(storage_path=tmp_path, workers=1)
    upgrade(settings.metadata_url)
    storage = FilesystemBlobStore(tmp_path)
    await storage.put("uploads/" + "a" * 32, b"z" * 500)  # bytes of no upload session
    metadata = SqlMetadataStore(settings.metadata_url)
    before = samples(exporter().exposition())
    try:
        policy = Policy(grace_period=timedelta(0), upload_expiry=timedelta(0))
        summary = await Collector(storage, metadata, policy).collect()
    finally:
        await metadata.close()
    after = samples(exporter().exposition())

    assert summary.bytes_freed == 500
    assert grew(before, after, "portside_gc_runs_total", result="success") == 1
    assert grew(before, after, "portside_gc_freed_bytes_total") == 500
    assert grew(before, after, "portside_gc_duration_seconds_count") == 1


# Who may read /metrics without auth ---------------------------------------------------------------


async def metrics_status(
    app: Starlette, client: tuple[str, int], headers: dict[str, str] | None = None
) -> int:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        return (await http.get("/metrics", headers=headers)).status_code


@pytest.mark.parametrize(
    ("address", "status"),
    [
        ("127.0.0.1", 200),
        ("127.8.9.10", 200),
        ("::1", 200),
        ("::ffff:127.0.0.1", 200),
        ("10.1.2.3", 403),
        ("192.168.1.1", 403),
    ],
)
async def test_by_default_only_loopback_reads_metrics(
    make_app: Callable[..., Starlette], address: str, status: int
) -> None:
    assert await metrics_status(make_app(), (address, 40000)) == status


async def test_metrics_allow_names_the_networks_that_may(
    make_app: Callable[..., Starlette],
) -> None:
    app = make_app(metrics={"allow": ["10.0.0.0/8", "192.168.1.7"]})

    assert await metrics_status(app, ("10.1.2.3", 1)) == 200
    assert await metrics_status(app, ("192.168.1.7", 1)) == 200
    assert await metrics_status(app, ("192.168.1.8", 1)) == 403
    assert await metrics_status(app, ("127.0.0.1", 1)) == 403  # allow replaces the default


async def test_a_request_through_a_proxy_is_judged_by_the_client_it_names(
    make_app: Callable[..., Starlette],
) -> None:
    proxy = ("127.0.0.1", 1)
    untrusted = make_app()
    trusted = make_app(trust_forwarded_headers=True)

    # A proxy on the same machine: every request comes from loopback.
    assert await metrics_status(untrusted, proxy, {"X-Forwarded-For": "127.0.0.1"}) == 403
    assert await metrics_status(untrusted, proxy, {"X-Real-IP": "127.0.0.1"}) == 403
    assert await metrics_status(trusted, proxy, {"X-Forwarded-For": "203.0.113.9"}) == 403
    assert await metrics_status(trusted, proxy, {"X-Forwarded-For": "1.2.3.4, 127.0.0.1"}) == 200
    assert await metrics_status(trusted, proxy, {"X-Forwarded-For": "not an address"}) == 403


async def test_refused_metrics_are_the_spec_error_envelope(
    make_app: Callable[..., Starlette],
) -> None:
    transport = httpx.ASGITransport(app=make_app(), client=("10.1.2.3", 1))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        response = await http.get("/metrics")

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "DENIED"


async def test_metrics_off_serves_and_gates_nothing(make_app: Callable[..., Starlette]) -> None:
    app = make_app(metrics={"enabled": False})

    assert await metrics_status(app, ("127.0.0.1", 1)) == 404
    assert app.state.gate is None  # an open registry asks no gate
