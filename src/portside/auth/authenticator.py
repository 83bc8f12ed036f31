"""Credentials to identities, cheaply enough for every request, each kind through its one cache
in this process: htpasswd logins under the failed-login limits, and bearer tokens.

No HTTP here: callers read headers and choose responses. Meant for one event loop per instance.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.to_thread

from portside.auth.base import AuthError, Identity
from portside.auth.htpasswd import FileVersion, HtpasswdFile
from portside.auth.permissions import Authorizer
from portside.auth.ratelimit import LoginLimiter
from portside.auth.robots import PREFIX as ROBOT_PREFIX
from portside.auth.robots import Robots
from portside.auth.tokens import TokenVerifier, VerifiedToken
from portside.metrics import logins as metrics

log = logging.getLogger(__name__)

DEFAULT_HASH_THREADS: Final = 4
DEFAULT_LOGIN_TTL: Final = 60.0
DEFAULT_LOGIN_CACHE_SIZE: Final = 4096
DEFAULT_TOKEN_CACHE_SIZE: Final = 10_000
# How often a remembered login looks at the htpasswd file: a changed or removed password stops
# working within this many seconds (a stat on every request costs more than all the rest).
FILE_CHECK_SECONDS: Final = 1.0


class LoginFailed(AuthError):
    """Unknown user, wrong password, or no htpasswd file to check against."""


class LoginThrottled(AuthError):
    """Too many failed logins from this address or for this username: try again later."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after}s")
        self.retry_after = retry_after


class NoTokenVerifier(AuthError):
    """A bearer token where no issuer is trusted."""


class RobotRevoked(AuthError):
    """A bearer token of a robot account that is revoked or expired since it was issued."""


@dataclass
class _Pending:
    """A password check in progress that other requests with the same credentials wait for."""

    done: anyio.Event = field(default_factory=anyio.Event)
    ok: bool | None = None  # None: the check did not finish (its request was cancelled)


class Authenticator:
    """Checks Basic credentials and bearer tokens.

    A verified (username, password) is remembered, by a keyed BLAKE2 hash of both, for
    `login_ttl` seconds while the htpasswd file is unchanged (looked at every FILE_CHECK_SECONDS):
    a hit costs that hash and a dict lookup, and is never held back by the failed-login limits, so
    a client that logged in keeps working while its address is throttled. A miss asks the limits
    (which a success clears only where the username had failures: no write per login), then hashes
    the password in a thread (at most `hash_threads` at once; concurrent misses with the same
    credentials share one hash). Failures are never remembered.

    A verified bearer token is remembered, by a keyed hash, until it expires: its signature is
    checked once per token and process, not once per request."""

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        htpasswd: HtpasswdFile | None = None,
        verifier: TokenVerifier | None = None,
        limiter: LoginLimiter | None = None,
        robots: Robots | None = None,
        hash_threads: int = DEFAULT_HASH_THREADS,
        login_ttl: float = DEFAULT_LOGIN_TTL,
        login_cache_size: int = DEFAULT_LOGIN_CACHE_SIZE,
        token_cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authorizer = authorizer
        self.htpasswd = htpasswd
        self.verifier = verifier
        self.limiter = limiter
        self.robots = robots
        self.hash_threads = hash_threads
        self.login_ttl = login_ttl
        self.login_cache_size = login_cache_size
        self.token_cache_size = token_cache_size
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._threads: anyio.CapacityLimiter | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._logins: dict[bytes, tuple[float, FileVersion | None, Identity]] = {}
        self._file_version: FileVersion | None = None
        self._file_checked_at = -math.inf
        self._tokens: dict[bytes, VerifiedToken] = {}

    # Passwords ----------------------------------------------------------------------------------

    async def login(self, username: str, password: str, address: str) -> Identity:
        """The identity of `username` if `password` is theirs; raises LoginThrottled (checked
        before any hash is spent) or LoginFailed. A `robot$` username is a robot account's."""
        if self.robots is not None and username.startswith(ROBOT_PREFIX):
            return await self._robot_login(self.robots, username, password, address)
        htpasswd = self.htpasswd
        if htpasswd is None:
            metrics.failures.inc()
            raise LoginFailed("no htpasswd file")
        key = self._login_key(username, password)
        known = self._remembered(htpasswd, key)
        if known is not None:
            return known
        standing = None
        if self.limiter is not None:
            standing = await self.limiter.standing(address, username)
            if standing.retry_after > 0:
                wait = standing.retry_after
                log.warning("login refused for %ss: too many failed logins from %s", wait, address)
                metrics.throttled.inc()
                raise LoginThrottled(wait)
        version = htpasswd.version()
        if not await self._verify(htpasswd, key, username, password):
            if self.limiter is not None:
                await self.limiter.failure(address, username)
            log.info("failed login from %s", address)
            metrics.failures.inc()
            raise LoginFailed("wrong username or password")
        if self.limiter is not None and standing is not None and standing.username_failed:
            await self.limiter.success(username)
        identity = self.authorizer.identity(username)
        self._remember(key, version, identity)
        return identity

    async def _robot_login(
        self, robots: Robots, username: str, secret: str, address: str
    ) -> Identity:
        """A robot's secret is looked up, not hashed slowly, and never remembered here (so a
        revocation holds at once); failures count as a password's do."""
        standing = None
        if self.limiter is not None:
            standing = await self.limiter.standing(address, username)
            if standing.retry_after > 0:
                metrics.throttled.inc()
                raise LoginThrottled(standing.retry_after)
        identity = await robots.login(username, secret)
        if identity is None:
            if self.limiter is not None:
                await self.limiter.failure(address, username)
            log.info("failed robot login from %s", address)
            metrics.failures.inc()
            raise LoginFailed("wrong robot name or secret, or a revoked or expired robot")
        if self.limiter is not None and standing is not None and standing.username_failed:
            await self.limiter.success(username)
        return identity

    async def robot_bearer(self, token: VerifiedToken) -> Identity | None:
        """For one of our tokens issued to a robot, the robot's identity; RobotRevoked if it is
        revoked or expired since. None for anyone else's token."""
        if self.robots is None or not token.subject.startswith(ROBOT_PREFIX):
            return None
        issued_at = token.claims.get("iat")
        issued = float(issued_at) if isinstance(issued_at, int | float) else 0.0
        identity = await self.robots.bearer(token.subject, issued)
        if identity is None:
            raise RobotRevoked("the robot account is revoked or expired")
        return identity

    def known_user(self, username: str) -> bool:
        """Whether the htpasswd file still has `username` (a refresh token outlives no user)."""
        return self.htpasswd is not None and username in self.htpasswd

    def _login_key(self, username: str, password: str) -> bytes:
        user = username.encode("utf-8", "surrogatepass")
        message = len(user).to_bytes(4, "big") + user + password.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(message, key=self._key, digest_size=16).digest()

    def _remembered(self, htpasswd: HtpasswdFile, key: bytes) -> Identity | None:
        hit = self._logins.get(key)
        if hit is None:
            return None
        expires, version, identity = hit
        now = self._clock()
        if now >= self._file_checked_at + FILE_CHECK_SECONDS:
            self._file_version, self._file_checked_at = htpasswd.version(), now
        if expires > now and version == self._file_version:
            return identity
        del self._logins[key]
        return None

    def _remember(self, key: bytes, version: FileVersion | None, identity: Identity) -> None:
        """Remember a login, with the file's version from before its password was checked."""
        if self.login_ttl <= 0 or self.login_cache_size <= 0:
            return
        now = self._clock()
        if len(self._logins) >= self.login_cache_size:
            self._logins.clear()
        self._logins[key] = (now + self.login_ttl, version, identity)
        self._file_version, self._file_checked_at = version, now

    async def _verify(
        self, htpasswd: HtpasswdFile, key: bytes, username: str, password: str
    ) -> bool:
        pending = self._pending.get(key)
        if pending is not None:
            await pending.done.wait()
            if pending.ok is not None:
                return pending.ok
        pending = self._pending[key] = _Pending()
        try:
            if self._threads is None:
                self._threads = anyio.CapacityLimiter(self.hash_threads)
            pending.ok = await anyio.to_thread.run_sync(
                htpasswd.verify, username, password, limiter=self._threads
            )
            return pending.ok
        finally:
            if self._pending.get(key) is pending:
                del self._pending[key]
            pending.done.set()

    # Tokens -------------------------------------------------------------------------------------

    def bearer(self, token: str) -> VerifiedToken:
        """The verified token; raises a TokenError (tokens.py lists them) or NoTokenVerifier."""
        key = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), key=self._key).digest()
        now = self._clock()
        cached = self._tokens.get(key)
        if cached is not None:
            if cached.expires_at > now:
                return cached
            del self._tokens[key]
        if self.verifier is None:
            raise NoTokenVerifier("no token issuer is trusted")
        verified = self.verifier.verify(token)
        if verified.expires_at > now and self.token_cache_size > 0:
            if len(self._tokens) >= self.token_cache_size:
                self._evict(now)
            self._tokens[key] = verified
        return verified

    def _evict(self, now: float) -> None:
        for stale in [k for k, t in self._tokens.items() if t.expires_at <= now]:
            del self._tokens[stale]
        while len(self._tokens) >= self.token_cache_size:
            del self._tokens[next(iter(self._tokens))]
