"""Refresh tokens: what the token endpoint hands out for `offline_token=true` and accepts in an
OAuth2 `grant_type=refresh_token` POST, in place of the user's password.

A refresh token is an opaque random string, bound to a username and a service. Only its SHA-256
is stored (a stolen store cannot be replayed), through a small `RefreshTokenStore`: the server
gives the metadata database (server/refresh.py), shared by every worker and every instance, so
that a token issued by one is good at all. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Protocol

from portside.auth.base import AuthError

DEFAULT_REFRESH_LIFETIME: Final = 90 * 24 * 3600.0
# A token's last use is recorded when the one recorded is older than this: clients redeem their
# token every few minutes, and a write each time would buy nothing.
LAST_USE_GRANULARITY: Final = 600.0


class RefreshTokenInvalid(AuthError):
    """Unknown, revoked, expired, or for another service."""


@dataclass(frozen=True)
class RefreshRecord:
    username: str
    service: str
    created_at: float
    expires_at: float | None  # None: until revoked
    last_used_at: float | None = None


class RefreshTokenStore(Protocol):
    """Records by token hash (hex SHA-256), times in seconds since the epoch. Each call stands
    alone; the store should be shared by every worker and instance that issues tokens."""

    async def add(self, token_hash: str, record: RefreshRecord) -> None:
        """Store the record of a new token (its hash is new: the token is random). A store may
        forget records expired before record.created_at meanwhile."""
        ...

    async def get(self, token_hash: str) -> RefreshRecord | None:
        """The record, or None when there is none."""
        ...

    async def used(self, token_hash: str, at: float) -> None:
        """Record that the token was used at `at`; no error when there is none."""
        ...

    async def delete(self, token_hash: str) -> None:
        """Forget the record; no error when there is none."""
        ...

    async def delete_user(self, username: str) -> int:
        """Forget every record of username; how many there were."""
        ...


class MemoryRefreshTokenStore:
    """Records in this process's memory: for tests, and for one worker that may forget."""

    def __init__(self) -> None:
        self._records: dict[str, RefreshRecord] = {}

    async def add(self, token_hash: str, record: RefreshRecord) -> None:
        self._records[token_hash] = record

    async def get(self, token_hash: str) -> RefreshRecord | None:
        return self._records.get(token_hash)

    async def used(self, token_hash: str, at: float) -> None:
        record = self._records.get(token_hash)
        if record is not None:
            self._records[token_hash] = replace(record, last_used_at=at)

    async def delete(self, token_hash: str) -> None:
        self._records.pop(token_hash, None)

    async def delete_user(self, username: str) -> int:
        hashes = [h for h, record in self._records.items() if record.username == username]
        for token_hash in hashes:
            del self._records[token_hash]
        return len(hashes)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class RefreshTokens:
    """Issues, redeems and revokes refresh tokens in a store."""

    def __init__(
        self,
        store: RefreshTokenStore,
        *,
        lifetime: float | None = DEFAULT_REFRESH_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lifetime = lifetime
        self._clock = clock

    async def issue(self, username: str, service: str) -> str:
        """A new refresh token for `username` on `service`."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        expires = None if self.lifetime is None else now + self.lifetime
        await self.store.add(token_hash(token), RefreshRecord(username, service, now, expires))
        return token

    async def redeem(self, token: str, service: str) -> str:
        """The username the token was issued to; raises RefreshTokenInvalid when it is unknown,
        expired (and then forgotten) or issued for another service. The token stays valid: Docker
        keeps using the one it got at login."""
        hashed = token_hash(token)
        record = await self.store.get(hashed)
        if record is None:
            raise RefreshTokenInvalid("unknown refresh token")
        now = self._clock()
        if record.expires_at is not None and record.expires_at <= now:
            await self.store.delete(hashed)
            raise RefreshTokenInvalid("expired refresh token")
        if record.service != service:
            raise RefreshTokenInvalid("refresh token for another service")
        if record.last_used_at is None or now - record.last_used_at >= LAST_USE_GRANULARITY:
            await self.store.used(hashed, now)
        return record.username

    async def revoke(self, token: str) -> None:
        await self.store.delete(token_hash(token))

    async def revoke_user(self, username: str) -> int:
        """Forget every refresh token of username (who left the htpasswd file, say)."""
        return await self.store.delete_user(username)
