"""Credentials to identities, cheaply enough for every request: htpasswd logins through the
file's verified-credentials cache (a miss hashes in a worker thread, once however many requests
wait for it) under the failed-login limits, and bearer tokens through a cache of verified tokens.

No HTTP here: callers read headers and choose responses. Meant for one event loop per instance.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.to_thread

from portside.auth.base import AuthError, Identity
from portside.auth.htpasswd import HtpasswdFile
from portside.auth.permissions import Authorizer
from portside.auth.ratelimit import LoginLimiter
from portside.auth.tokens import TokenVerifier, VerifiedToken

log = logging.getLogger(__name__)

DEFAULT_HASH_THREADS: Final = 4
DEFAULT_TOKEN_CACHE_SIZE: Final = 10_000


class LoginFailed(AuthError):
    """Unknown user, wrong password, or no htpasswd file to check against."""


class LoginThrottled(AuthError):
    """Too many failed logins from this address or for this username: try again later."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after}s")
        self.retry_after = retry_after


class NoTokenVerifier(AuthError):
    """A bearer token where no issuer is trusted."""


@dataclass
class _Pending:
    """A password check in progress that other requests with the same credentials wait for."""

    done: anyio.Event = field(default_factory=anyio.Event)
    ok: bool | None = None  # None: the check did not finish (its request was cancelled)


class Authenticator:
    """Checks Basic credentials and bearer tokens.

    `login` costs, on a cache hit, one HMAC and one `stat` of the htpasswd file; on a miss, one
    password hash in a thread (at most `hash_threads` at once). Concurrent misses with the same
    credentials share one hash. Failed logins count against the limiter; a cached success never
    does, so a client that logged in keeps working while its address is throttled.

    `bearer` remembers verified tokens by their SHA-256 until they expire, so a signature is
    checked once per token and process, not once per request."""

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        htpasswd: HtpasswdFile | None = None,
        verifier: TokenVerifier | None = None,
        limiter: LoginLimiter | None = None,
        hash_threads: int = DEFAULT_HASH_THREADS,
        token_cache_size: int = DEFAULT_TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authorizer = authorizer
        self.htpasswd = htpasswd
        self.verifier = verifier
        self.limiter = limiter or LoginLimiter()
        self.hash_threads = hash_threads
        self.token_cache_size = token_cache_size
        self._clock = clock
        self._threads: anyio.CapacityLimiter | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._tokens: dict[bytes, VerifiedToken] = {}

    # Passwords ----------------------------------------------------------------------------------

    async def login(self, username: str, password: str, address: str) -> Identity:
        """The identity of `username` if `password` is theirs; raises LoginThrottled (checked
        before any hash is spent) or LoginFailed."""
        htpasswd = self.htpasswd
        if htpasswd is None:
            raise LoginFailed("no htpasswd file")
        if htpasswd.cached(username, password):
            return self.authorizer.identity(username)
        wait = self.limiter.retry_after(address, username)
        if wait > 0:
            log.warning("login refused for %ss: too many failed logins from %s", wait, address)
            raise LoginThrottled(wait)
        if not await self._verify(htpasswd, username, password):
            self.limiter.failure(address, username)
            log.info("failed login from %s", address)
            raise LoginFailed("wrong username or password")
        self.limiter.success(username)
        return self.authorizer.identity(username)

    def known_user(self, username: str) -> bool:
        """Whether the htpasswd file still has `username` (a refresh token outlives no user)."""
        return self.htpasswd is not None and username in self.htpasswd

    async def _verify(self, htpasswd: HtpasswdFile, username: str, password: str) -> bool:
        # Held only while the hash runs, in this process's memory: it never leaves it.
        user = username.encode("utf-8", "surrogatepass")
        key = hashlib.sha256(
            len(user).to_bytes(4, "big") + user + password.encode("utf-8", "surrogatepass")
        ).digest()
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
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
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
