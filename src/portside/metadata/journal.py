"""The outbox of notification events and the audit log: written in the transaction of the change
they describe (write_journal), or on their own for what changes nothing (record); read by the
delivery loop and `portside audit`."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select

from portside.metadata.base import (
    TAG_MOVED,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    Journal,
    OutboxEvent,
)
from portside.metadata.engine import Database
from portside.metadata.prepared import Prepared
from portside.metadata.statements import now, utc
from portside.metadata.tables import audit_log, outbox

AUDIT_COLUMNS = (
    "at",
    "action",
    "actor",
    "address",
    "repository",
    "digest",
    "tag",
    "previous",
    "detail",
)


_ADD_EVENT = Prepared(
    insert(outbox).values(
        endpoint=bindparam("endpoint"),
        created_at=bindparam("created_at"),
        payload=bindparam("payload"),
    )
)
_ADD_ENTRY = Prepared(
    insert(audit_log).values({column: bindparam(column) for column in AUDIT_COLUMNS})
)


def write_journal(conn: Connection, journal: Journal) -> None:
    stamp = now()
    for notice in journal.notices:
        _ADD_EVENT.run(conn, endpoint=notice.endpoint, created_at=stamp, payload=notice.payload)
    write_audit(conn, journal.audit)


def write_audit(conn: Connection, entries: Iterable[AuditEntry]) -> None:
    for entry in entries:
        _ADD_ENTRY.run(conn, **{column: getattr(entry, column) for column in AUDIT_COLUMNS})


def moved(journal: Journal, previous: str) -> Journal:
    """The journal of a push that moved a tag from the manifest `previous`."""
    audit = tuple(replace(entry, action=TAG_MOVED, previous=previous) for entry in journal.audit)
    return replace(journal, audit=audit)


def like(template: AuditEntry | None, repository: str, digests: Iterable[str]) -> list[AuditEntry]:
    """Entries like template, one for each digest deleted in repository."""
    if template is None:
        return []
    return [replace(template, repository=repository, digest=digest) for digest in digests]


def _audit_record(row: Any) -> AuditRecord:
    values = {column: getattr(row, column) for column in AUDIT_COLUMNS}
    values["at"] = utc(values["at"])
    return AuditRecord(row.id, AuditEntry(**values))


class SqlJournal(Database):
    async def record(self, journal: Journal) -> None:
        if journal:
            # A power cut may lose these (pulls, logins): no fsync for them.
            await self._write(lambda conn: write_journal(conn, journal), durable=False)

    async def pending_events(self, endpoint: str, limit: int) -> list[OutboxEvent]:
        query = (
            select(outbox.c.id, outbox.c.endpoint, outbox.c.payload)
            .where(outbox.c.endpoint == endpoint)
            .order_by(outbox.c.id)
            .limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [OutboxEvent(row.id, row.endpoint, row.payload) for row in rows]

    async def delete_events(self, ids: Collection[int]) -> None:
        statement = delete(outbox).where(outbox.c.id.in_(list(ids)))
        # No fsync: a deletion lost to a power cut only sends its events again.
        await self._write(lambda conn: conn.execute(statement), durable=False)

    async def audit_entries(self, query: AuditQuery) -> list[AuditRecord]:
        statement = select(audit_log).order_by(audit_log.c.id.desc()).limit(query.limit)
        if query.since is not None:
            statement = statement.where(audit_log.c.at >= query.since)
        if query.until is not None:
            statement = statement.where(audit_log.c.at < query.until)
        for column, value in (
            (audit_log.c.actor, query.actor),
            (audit_log.c.repository, query.repository),
            (audit_log.c.action, query.action),
        ):
            if value is not None:
                statement = statement.where(column == value)
        rows = await self._read(lambda conn: conn.execute(statement).all())
        return [_audit_record(row) for row in reversed(rows)]

    async def prune_audit(self, before: datetime, limit: int) -> int:
        def run(conn: Connection) -> int:
            old = (
                select(audit_log.c.id)
                .where(audit_log.c.at < before)
                .order_by(audit_log.c.at)
                .limit(limit)
            )
            ids = list(conn.scalars(old))
            if ids:
                conn.execute(delete(audit_log).where(audit_log.c.id.in_(ids)))
            return len(ids)

        return await self._write(run, durable=False)
