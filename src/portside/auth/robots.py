"""Robot accounts: access tokens for CI and other machines, not a person's password.

A robot logs in as `robot$NAME` with its secret as the password (Basic, `docker login`, the
token service); what it may do is its scopes (`repository:team/app:pull,push`, names may be
patterns as in access rules), plus what anyone may do, never what the access rules give users.
Only the SHA-256 of a secret is stored, through a small RobotRecords store that the server
gives the metadata database (server/robots.py), shared by every worker and instance.

Each process looks a secret (or, for a bearer token the token service issued to a robot, its
name) up at most once per LOOKUP_SECONDS: a revoked or expired robot stops working everywhere
within that, with no cache to flush. Its last use is written at most once per LAST_USE_SECONDS.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from portside.auth.base import REPOSITORY, Access, Identity, InvalidScope, parse_scopes

PREFIX: Final = "robot$"
SECRET_PREFIX: Final = "psrt_"  # noqa: S105 - marks a robot secret, is none
LOOKUP_SECONDS: Final = 1.0
LAST_USE_SECONDS: Final = 60.0
CACHED_MAX: Final = 10_000
T = TypeVar("T")
NAME: Final = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


class InvalidRobot(ValueError):
    """A robot's name or scopes that cannot be."""


@dataclass(frozen=True)
class Robot:
    name: str
    scopes: frozenset[Access]
    created_at: float
    expires_at: float | None  # None: until revoked
    last_used_at: float | None = None

    @property
    def username(self) -> str:
        return PREFIX + self.name

    def identity(self) -> Identity:
        return Identity(self.username, scopes=self.scopes)

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


class RobotRecords(Protocol):
    """Robots by the SHA-256 (hex) of their secret, or by name; times in seconds since the
    epoch."""

    async def by_hash(self, token_hash: str) -> Robot | None: ...

    async def by_name(self, name: str) -> Robot | None: ...

    async def used(self, token_hash: str, at: float) -> None: ...


def check_name(name: str) -> str:
    if len(name) > 100 or not NAME.fullmatch(name):
        raise InvalidRobot(
            f"a robot's name is lowercase letters and digits, separated by . _ or -: {name!r}"
        )
    return name


def parse_robot_scopes(values: Iterable[str]) -> frozenset[Access]:
    """Scopes as `--scope` gives them: repository scopes (names may be patterns) and
    `registry:catalog:*`."""
    try:
        scopes = parse_scopes(values)
    except InvalidScope as error:
        raise InvalidRobot(str(error)) from None
    if not scopes:
        raise InvalidRobot("a robot needs at least one scope, e.g. repository:team/app:pull")
    for scope in scopes:
        if scope.type != REPOSITORY and scope.scope != "registry:catalog:*":
            raise InvalidRobot(f"not a repository scope: {scope.scope}")
    return frozenset(scopes)


def new_secret() -> tuple[str, str]:
    """A secret and its hash."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, secret_hash(secret)


def secret_hash(secret: str) -> str:
    # A secret is 256 random bits: one SHA-256 is as good as a slow hash, and costs nothing.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class Robots:
    """Robots' logins and bearer tokens, looked up through `records` at most once a second."""

    def __init__(
        self,
        records: RobotRecords,
        clock: Callable[[], float] = time.time,
        lookup_seconds: float = LOOKUP_SECONDS,
    ) -> None:
        self._records = records
        self._clock = clock
        self._lookup_seconds = lookup_seconds
        self._by_hash: dict[str, tuple[float, Robot | None]] = {}
        self._by_name: dict[str, tuple[float, Robot | None]] = {}
        self._used: dict[str, float] = {}

    async def login(self, username: str, secret: str) -> Identity | None:
        """The robot's identity if username is `robot$NAME` and secret is its live secret."""
        if not username.startswith(PREFIX) or not secret.startswith(SECRET_PREFIX):
            return None
        token_hash = secret_hash(secret)
        now = self._clock()
        cached = self._by_hash.get(token_hash)
        if cached is not None and now - cached[0] < self._lookup_seconds:
            robot = cached[1]
        else:
            robot = await self._records.by_hash(token_hash)
            _keep(self._by_hash, token_hash, (now, robot))
        if robot is None or robot.username != username or not robot.live(now):
            return None
        await self._note_use(token_hash, robot, now)
        return robot.identity()

    async def _note_use(self, token_hash: str, robot: Robot, now: float) -> None:
        last = max(robot.last_used_at or 0.0, self._used.get(token_hash, 0.0))
        if now - last >= LAST_USE_SECONDS:
            _keep(self._used, token_hash, now)
            await self._records.used(token_hash, now)

    async def bearer(self, subject: str, issued_at: float) -> Identity | None:
        """The identity of a robot subject of one of our bearer tokens, issued at issued_at,
        while the robot is live and was made before the token (not revoked and made again)."""
        name = subject.removeprefix(PREFIX)
        now = self._clock()
        cached = self._by_name.get(name)
        if cached is not None and now - cached[0] < self._lookup_seconds:
            robot = cached[1]
        else:
            robot = await self._records.by_name(name)
            _keep(self._by_name, name, (now, robot))
        if robot is None or not robot.live(now) or robot.created_at > issued_at + 1:
            return None
        return robot.identity()


def _keep(cache: dict[str, T], key: str, value: T) -> None:
    if len(cache) >= CACHED_MAX:
        cache.clear()
    cache[key] = value
