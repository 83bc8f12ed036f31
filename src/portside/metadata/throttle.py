"""Failed logins (auth/ratelimit.py, server/throttle.py), shared by every worker and instance on
the database, so that they limit logins as one."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select

from portside.metadata.base import LOGIN_FAILURE_PRUNE_BATCH
from portside.metadata.engine import Database
from portside.metadata.statements import utc
from portside.metadata.tables import login_failures


def _prune(conn: Connection, before: datetime) -> None:
    """Delete at most LOGIN_FAILURE_PRUNE_BATCH failures older than `before`, the oldest first
    (an index range scan); rows a concurrent transaction holds are skipped, not waited for."""
    old = (
        select(login_failures.c.id)
        .where(login_failures.c.failed_at < before)
        .order_by(login_failures.c.failed_at)
        .limit(LOGIN_FAILURE_PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    ids = list(conn.scalars(old))
    if ids:
        conn.execute(delete(login_failures).where(login_failures.c.id.in_(ids)))


class SqlThrottle(Database):
    async def record_failure(self, key: str, at: datetime, since: datetime) -> int:
        def run(conn: Connection) -> int:
            conn.execute(insert(login_failures).values(key=key, failed_at=at))
            _prune(conn, since)
            counted = select(func.count()).where(
                login_failures.c.key == key, login_failures.c.failed_at >= since
            )
            return int(conn.scalar(counted) or 0)

        # A failure lost to a power cut lets one more guess through: no fsync for it.
        return await self._write(run, durable=False)

    async def failures_since(self, key: str, since: datetime) -> list[datetime]:
        query = (
            select(login_failures.c.failed_at)
            .where(login_failures.c.key == key, login_failures.c.failed_at >= since)
            .order_by(login_failures.c.failed_at)
        )
        found = await self._read(lambda conn: list(conn.scalars(query)))
        return [utc(when) for when in found]

    async def clear_failures(self, key: str) -> None:
        statement = delete(login_failures).where(login_failures.c.key == key)
        await self._write(lambda conn: conn.execute(statement), durable=False)
