"""Refresh tokens of the built-in token service (auth/refresh.py, server/refresh.py), shared by
every worker and instance on the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from portside.metadata.base import REFRESH_PRUNE_BATCH, RefreshToken
from portside.metadata.engine import Database
from portside.metadata.statements import utc
from portside.metadata.tables import refresh_tokens


def _prune(conn: Connection, before: datetime) -> None:
    """Delete at most REFRESH_PRUNE_BATCH tokens expired before `before`, the earliest first (an
    index range scan); rows a concurrent transaction holds are skipped, not waited for."""
    expired = (
        select(refresh_tokens.c.token_hash)
        .where(refresh_tokens.c.expires_at < before)
        .order_by(refresh_tokens.c.expires_at)
        .limit(REFRESH_PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    hashes = list(conn.scalars(expired))
    if hashes:
        conn.execute(delete(refresh_tokens).where(refresh_tokens.c.token_hash.in_(hashes)))


class SqlRefreshTokens(Database):
    async def add_refresh_token(self, token: RefreshToken) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                insert(refresh_tokens).values(
                    token_hash=token.token_hash,
                    username=token.username,
                    service=token.service,
                    issued_at=token.issued_at,
                    expires_at=token.expires_at,
                    last_used_at=token.last_used_at,
                )
            )
            _prune(conn, token.issued_at)

        await self._write(run)

    async def find_refresh_token(self, token_hash: str) -> RefreshToken | None:
        query = select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
        row = await self._read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return RefreshToken(
            token_hash=row.token_hash,
            username=row.username,
            service=row.service,
            issued_at=utc(row.issued_at),
            expires_at=None if row.expires_at is None else utc(row.expires_at),
            last_used_at=None if row.last_used_at is None else utc(row.last_used_at),
        )

    async def use_refresh_token(self, token_hash: str, at: datetime) -> bool:
        statement = (
            update(refresh_tokens)
            .where(refresh_tokens.c.token_hash == token_hash)
            .values(last_used_at=at)
        )
        # A last-use stamp lost to a power cut harms nothing: no fsync for it.
        result = await self._write(lambda conn: conn.execute(statement), durable=False)
        return result.rowcount > 0

    async def delete_refresh_token(self, token_hash: str) -> bool:
        statement = delete(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
        result = await self._write(lambda conn: conn.execute(statement))
        return result.rowcount > 0

    async def revoke_refresh_tokens(self, username: str) -> int:
        statement = delete(refresh_tokens).where(refresh_tokens.c.username == username)
        result = await self._write(lambda conn: conn.execute(statement))
        return int(result.rowcount)
