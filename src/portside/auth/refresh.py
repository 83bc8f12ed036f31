"""Refresh tokens: what the token endpoint hands out for `offline_token=true` and accepts in an
OAuth2 `grant_type=refresh_token` POST, in place of the user's password.

A refresh token is an opaque random string, bound to a username and a service. Only its SHA-256
is stored (a stolen store cannot be replayed), through a small `RefreshTokenStore`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Protocol

from portside.auth._files import atomic_write, locked
from portside.auth.base import AuthError

DEFAULT_REFRESH_LIFETIME: Final = 90 * 24 * 3600.0
STORE_FILE_MODE: Final = 0o600


class RefreshTokenInvalid(AuthError):
    """Unknown, revoked, expired, or for another service."""


@dataclass(frozen=True)
class RefreshRecord:
    username: str
    service: str
    created_at: float
    expires_at: float | None  # None: until revoked


class RefreshTokenStore(Protocol):
    """Records by token hash (hex SHA-256). Each call stands alone; implementations are safe to
    call from several threads, and should be shared by every worker that issues tokens."""

    def get(self, token_hash: str) -> RefreshRecord | None:
        """The record, or None when there is none."""
        ...

    def put(self, token_hash: str, record: RefreshRecord) -> None:
        """Store the record, replacing any under the same hash."""
        ...

    def delete(self, token_hash: str) -> None:
        """Forget the record; no error when there is none."""
        ...


class MemoryRefreshTokenStore:
    """Records in this process's memory: for tests, and for one worker that may forget."""

    def __init__(self) -> None:
        self._records: dict[str, RefreshRecord] = {}
        self._lock = threading.Lock()

    def get(self, token_hash: str) -> RefreshRecord | None:
        with self._lock:
            return self._records.get(token_hash)

    def put(self, token_hash: str, record: RefreshRecord) -> None:
        with self._lock:
            self._records[token_hash] = record

    def delete(self, token_hash: str) -> None:
        with self._lock:
            self._records.pop(token_hash, None)


class FileRefreshTokenStore:
    """Records in one JSON file (mode 0600), read on every call and replaced atomically under a
    lock: shared by the workers of one machine, fine for the few tokens people log in with."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, RefreshRecord]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {token_hash: RefreshRecord(**record) for token_hash, record in data.items()}

    def _save(self, records: dict[str, RefreshRecord]) -> None:
        data = {token_hash: asdict(record) for token_hash, record in records.items()}
        atomic_write(self.path, json.dumps(data, indent=1).encode(), STORE_FILE_MODE)

    def get(self, token_hash: str) -> RefreshRecord | None:
        return self._load().get(token_hash)

    def put(self, token_hash: str, record: RefreshRecord) -> None:
        with locked(self.path):
            records = self._load()
            records[token_hash] = record
            self._save(records)

    def delete(self, token_hash: str) -> None:
        with locked(self.path):
            records = self._load()
            if records.pop(token_hash, None) is not None:
                self._save(records)

    def prune(self, now: float) -> int:
        """Drop the records expired at `now`; how many went."""
        with locked(self.path):
            records = self._load()
            kept = {h: r for h, r in records.items() if r.expires_at is None or r.expires_at > now}
            if len(kept) != len(records):
                self._save(kept)
            return len(records) - len(kept)


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

    def issue(self, username: str, service: str) -> str:
        """A new refresh token for `username` on `service`."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        expires = None if self.lifetime is None else now + self.lifetime
        self.store.put(token_hash(token), RefreshRecord(username, service, now, expires))
        return token

    def redeem(self, token: str, service: str) -> str:
        """The username the token was issued to; raises RefreshTokenInvalid when it is unknown,
        expired (and then forgotten) or issued for another service. The token stays valid: Docker
        keeps using the one it got at login."""
        hashed = token_hash(token)
        record = self.store.get(hashed)
        if record is None:
            raise RefreshTokenInvalid("unknown refresh token")
        if record.expires_at is not None and record.expires_at <= self._clock():
            self.store.delete(hashed)
            raise RefreshTokenInvalid("expired refresh token")
        if record.service != service:
            raise RefreshTokenInvalid("refresh token for another service")
        return record.username

    def revoke(self, token: str) -> None:
        self.store.delete(token_hash(token))
