"""Robot accounts in the auth layer: secrets, scopes, the once-a-second lookups that make a
revocation hold everywhere, and what their identity may do."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from portside.auth.base import Identity, repository
from portside.auth.permissions import Authorizer
from portside.auth.robots import (
    InvalidRobot,
    Robot,
    Robots,
    check_name,
    new_secret,
    parse_robot_scopes,
    secret_hash,
)


class Records:
    def __init__(self) -> None:
        self.robots: dict[str, Robot] = {}  # by hash
        self.lookups = 0
        self.uses: list[tuple[str, float]] = []

    async def by_hash(self, token_hash: str) -> Robot | None:
        self.lookups += 1
        return self.robots.get(token_hash)

    async def by_name(self, name: str) -> Robot | None:
        self.lookups += 1
        return next((r for r in self.robots.values() if r.name == name), None)

    async def used(self, token_hash: str, at: float) -> None:
        self.uses.append((token_hash, at))


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def robot(name: str = "ci", expires_at: float | None = None) -> Robot:
    return Robot(name, parse_robot_scopes(["repository:team/*:pull,push"]), 900.0, expires_at)


def test_names_and_scopes_are_checked() -> None:
    assert check_name("ci-app.v2") == "ci-app.v2"
    for bad in ("CI", "-ci", "a b", "ci$", ""):
        with pytest.raises(InvalidRobot):
            check_name(bad)
    for scopes in ([], ["repository:x"], ["user:x:pull"], ["registry:catalog:pull"]):
        with pytest.raises(InvalidRobot):
            parse_robot_scopes(scopes)
    assert (
        len(parse_robot_scopes(["repository:a:pull repository:b:push", "registry:catalog:*"])) == 3
    )


def test_a_secret_is_looked_up_at_most_once_a_second_so_a_revocation_holds_within_it() -> None:
    records, clock = Records(), Clock()
    secret, token_hash = new_secret()
    records.robots[token_hash] = robot()
    robots = Robots(records, clock)

    async def login() -> Identity | None:
        return await robots.login("robot$ci", secret)

    first = asyncio.run(login())
    asyncio.run(login())
    assert first is not None
    assert first.username == "robot$ci"
    assert records.lookups == 1
    del records.robots[token_hash]
    clock.now += 0.5
    assert asyncio.run(login()) is not None  # within the second: as looked up
    clock.now += 0.6
    assert asyncio.run(login()) is None


def test_wrong_names_wrong_secrets_and_expired_robots_are_refused() -> None:
    records, clock = Records(), Clock()
    secret, token_hash = new_secret()
    records.robots[token_hash] = robot(expires_at=clock.now + 10)
    robots = Robots(records, clock)

    assert asyncio.run(robots.login("robot$other", secret)) is None
    assert asyncio.run(robots.login("ci", secret)) is None  # no robot$ prefix: not a robot
    assert asyncio.run(robots.login("robot$ci", secret + "x")) is None
    assert asyncio.run(robots.login("robot$ci", "not-a-robot-secret")) is None
    clock.now += 11
    assert asyncio.run(robots.login("robot$ci", secret)) is None
    assert secret_hash(secret) == token_hash


def test_last_use_is_written_at_most_once_a_minute() -> None:
    records, clock = Records(), Clock()
    secret, token_hash = new_secret()
    records.robots[token_hash] = robot()
    robots = Robots(records, clock, lookup_seconds=0)
    for _ in range(5):
        asyncio.run(robots.login("robot$ci", secret))
        clock.now += 10
    records.robots[token_hash] = replace(robot(), last_used_at=clock.now)
    clock.now += 30
    asyncio.run(robots.login("robot$ci", secret))
    clock.now += 31
    asyncio.run(robots.login("robot$ci", secret))

    # at 1000, then not before a minute after the last use the record shows (1050)
    assert [at for _, at in records.uses] == [1000.0, 1111.0]


def test_a_bearer_token_is_refused_once_its_robot_is_revoked_or_made_again() -> None:
    records, clock = Records(), Clock()
    _, token_hash = new_secret()
    records.robots[token_hash] = robot()
    robots = Robots(records, clock, lookup_seconds=0)

    assert asyncio.run(robots.bearer("robot$ci", issued_at=950)) is not None
    records.robots[token_hash] = replace(robot(), created_at=960.0)  # revoked, made again
    assert asyncio.run(robots.bearer("robot$ci", issued_at=950)) is None
    del records.robots[token_hash]
    assert asyncio.run(robots.bearer("robot$ci", issued_at=970)) is None


def test_a_robot_may_do_what_its_scopes_say_and_anyone_may_never_what_users_may() -> None:
    authorizer = Authorizer.from_data(
        {
            "anonymous_pull": ["public/*"],
            "user_namespaces": True,
            "rules": [{"repositories": ["*"], "authenticated": True, "actions": ["pull"]}],
        }
    )
    identity = robot().identity()

    assert authorizer.allowed(identity, repository("team/a/b", "pull", "push")) == {"pull", "push"}
    assert authorizer.allowed(identity, repository("team/a", "delete")) == frozenset()
    assert authorizer.allowed(identity, repository("public/x", "pull")) == {"pull"}
    assert authorizer.allowed(identity, repository("other", "pull")) == frozenset()
    assert authorizer.allowed(identity, repository("robot$ci/x", "push")) == frozenset()
