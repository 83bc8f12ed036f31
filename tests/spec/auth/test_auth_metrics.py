"""Who may read /metrics on a registry with auth: loopback callers as without auth, and from
anywhere the users of metrics.users and metrics.groups with their credentials; and the counts of
failed and throttled logins."""

from __future__ import annotations

from pathlib import Path

import httpx
from auth_setup import Registry, RegistryFactory, auth_section, basic

from scrapes import grew, samples

REMOTE = ("203.0.113.7", 40000)


async def remote_get(registry: Registry, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=registry.app, client=REMOTE)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        return await client.get("/metrics", headers=headers)


async def test_metrics_readers_log_in_from_anywhere(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(
        auth_section(htpasswd), metrics={"users": ["carol"], "groups": ["developers"]}
    )

    anonymous = await remote_get(registry)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic ")
    assert (await remote_get(registry, basic("carol"))).status_code == 200
    assert (await remote_get(registry, basic("alice"))).status_code == 200  # a developer
    assert (await remote_get(registry, basic("dave"))).status_code == 403
    assert (await remote_get(registry, basic("carol", "wrong"))).status_code == 401
    # From loopback, as without auth, no login is needed.
    assert (await registry.client.get("/metrics")).status_code == 200


async def test_without_metrics_users_remote_callers_are_refused_whoever_they_are(
    registry: Registry,
) -> None:
    assert (await remote_get(registry, basic("admin"))).status_code == 403


async def test_failed_and_throttled_logins_are_counted(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(
        auth_section(htpasswd, login_limit={"failures": 2, "window_seconds": 60})
    )
    before = samples((await registry.client.get("/metrics")).text)
    wrong = await registry.client_with(basic("dave", "wrong"))
    statuses = [(await wrong.get("/v2/")).status_code for _ in range(3)]
    after = samples((await registry.client.get("/metrics")).text)

    assert statuses == [401, 401, 429]
    assert grew(before, after, "portside_login_failures_total") == 2
    assert grew(before, after, "portside_login_throttled_total") == 1
