"""Logins to the web UI (api/ui/sessions.py), shared by every worker and instance on the
database; and the record of garbage collection runs that the UI's usage page shows."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from portside.metadata.base import (
    COLLECTION_RUNS_KEPT,
    REFRESH_PRUNE_BATCH,
    CollectionRun,
    UiSession,
)
from portside.metadata.engine import Database
from portside.metadata.statements import utc
from portside.metadata.tables import gc_runs, ui_sessions


class SqlSessions(Database):
    async def add_session(self, session: UiSession) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                insert(ui_sessions).values(
                    token_hash=session.token_hash,
                    username=session.username,
                    csrf=session.csrf,
                    created_at=session.created_at,
                    expires_at=session.expires_at,
                )
            )
            # A few expired rows go with each login, the earliest first (an index range scan);
            # rows a concurrent transaction holds are skipped, not waited for.
            expired = (
                select(ui_sessions.c.token_hash)
                .where(ui_sessions.c.expires_at < session.created_at)
                .order_by(ui_sessions.c.expires_at)
                .limit(REFRESH_PRUNE_BATCH)
                .with_for_update(skip_locked=True)
            )
            hashes = list(conn.scalars(expired))
            if hashes:
                conn.execute(delete(ui_sessions).where(ui_sessions.c.token_hash.in_(hashes)))

        await self._write(run)

    async def find_session(self, token_hash: str) -> UiSession | None:
        query = select(ui_sessions).where(ui_sessions.c.token_hash == token_hash)
        row = await self._read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return UiSession(
            row.token_hash, row.username, row.csrf, utc(row.created_at), utc(row.expires_at)
        )

    async def delete_session(self, token_hash: str) -> bool:
        statement = delete(ui_sessions).where(ui_sessions.c.token_hash == token_hash)
        result = await self._write(lambda conn: conn.execute(statement))
        return result.rowcount > 0

    async def record_collection(self, run: CollectionRun) -> None:
        def write(conn: Connection) -> None:
            conn.execute(
                insert(gc_runs).values(
                    finished_at=run.finished_at,
                    seconds=run.seconds,
                    bytes_freed=run.bytes_freed,
                    summary=run.summary,
                )
            )
            newest = select(gc_runs.c.id).order_by(gc_runs.c.id.desc()).offset(COLLECTION_RUNS_KEPT)
            oldest_kept = conn.scalar(newest.limit(1))
            if oldest_kept is not None:
                conn.execute(delete(gc_runs).where(gc_runs.c.id <= oldest_kept))

        await self._write(write)

    async def last_collection(self) -> CollectionRun | None:
        query = select(gc_runs).order_by(gc_runs.c.id.desc()).limit(1)
        row = await self._read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return CollectionRun(utc(row.finished_at), row.seconds, row.bytes_freed, row.summary)
