"""The token service's refresh tokens in the metadata database: auth/refresh.py's store, over
the MetadataStore that every worker and every instance shares (auth and metadata are one layer and
know nothing of each other; the server joins them here).

A login with `offline_token` inserts one row, which also prunes a few expired ones; a refresh
reads one row by its primary key (the token's hash), and writes its last use at most every
LAST_USE_GRANULARITY.
"""

from __future__ import annotations

from datetime import UTC, datetime

from portside.auth.refresh import RefreshRecord
from portside.metadata.base import RefreshToken, TokenStore


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _maybe_when(seconds: float | None) -> datetime | None:
    return None if seconds is None else _when(seconds)


def _maybe_seconds(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


class MetadataRefreshTokenStore:
    """auth.refresh.RefreshTokenStore over a TokenStore."""

    def __init__(self, metadata: TokenStore) -> None:
        self.metadata = metadata

    async def add(self, token_hash: str, record: RefreshRecord) -> None:
        await self.metadata.add_refresh_token(
            RefreshToken(
                token_hash=token_hash,
                username=record.username,
                service=record.service,
                issued_at=_when(record.created_at),
                expires_at=_maybe_when(record.expires_at),
                last_used_at=_maybe_when(record.last_used_at),
            )
        )

    async def get(self, token_hash: str) -> RefreshRecord | None:
        found = await self.metadata.find_refresh_token(token_hash)
        if found is None:
            return None
        return RefreshRecord(
            username=found.username,
            service=found.service,
            created_at=found.issued_at.timestamp(),
            expires_at=_maybe_seconds(found.expires_at),
            last_used_at=_maybe_seconds(found.last_used_at),
        )

    async def used(self, token_hash: str, at: float) -> None:
        await self.metadata.use_refresh_token(token_hash, _when(at))

    async def delete(self, token_hash: str) -> None:
        await self.metadata.delete_refresh_token(token_hash)

    async def delete_user(self, username: str) -> int:
        return await self.metadata.revoke_refresh_tokens(username)
