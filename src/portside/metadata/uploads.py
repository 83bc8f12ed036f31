"""Upload sessions: rows that let the next request of an upload reach any worker or instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from portside.metadata.base import QUIET, Claim, Conflict, Journal, Upload
from portside.metadata.blobs import link, record_blob
from portside.metadata.engine import Database
from portside.metadata.journal import write_journal
from portside.metadata.prepared import Prepared
from portside.metadata.statements import ensure_repository, now, utc
from portside.metadata.tables import uploads

UPLOAD_COLUMNS = (
    uploads.c.id,
    uploads.c.repository,
    uploads.c.offset,
    uploads.c.hashed_offset,
    uploads.c.hashed_digest,
    uploads.c.created_at,
    uploads.c.updated_at,
)
# Every request of an upload after the first looks its session up.
_UPLOAD = Prepared(
    select(*UPLOAD_COLUMNS).where(
        uploads.c.id == bindparam("id"), uploads.c.repository == bindparam("repository")
    )
)

_CREATE = Prepared(
    insert(uploads).values(
        {column: bindparam(column) for column in (c.name for c in UPLOAD_COLUMNS)}
    )
)
_DELETE = Prepared(delete(uploads).where(uploads.c.id == bindparam("id")))


def upload_record(row: Sequence[Any]) -> Upload:
    """The Upload of a row of UPLOAD_COLUMNS."""
    id, repository, offset, hashed_offset, hashed_digest, created_at, updated_at = row
    return Upload(
        id, repository, offset, hashed_offset, hashed_digest, utc(created_at), utc(updated_at)
    )


class SqlUploads(Database):
    async def create_upload(self, id: str, repository: str) -> Upload:
        stamp = now()
        values = {
            "id": id,
            "repository": repository,
            "offset": 0,
            "hashed_offset": 0,
            "hashed_digest": None,
            "created_at": stamp,
            "updated_at": stamp,
        }
        await self._write(lambda conn: _CREATE.run(conn, **values))
        return Upload(id, repository, 0, 0, None, stamp, stamp)

    async def get_upload(self, repository: str, id: str) -> Upload | None:
        if "\x00" in id or "\x00" in repository:  # in no row; and PostgreSQL refuses it as text
            return None
        row = await self._first(_UPLOAD, id=id, repository=repository)
        return None if row is None else upload_record(row)

    async def advance_upload(
        self,
        id: str,
        expected_offset: int,
        offset: int,
        hashed_digest: str | None,
    ) -> Upload:
        def run(conn: Connection) -> Upload:
            result = conn.execute(
                update(uploads)
                .where(uploads.c.id == id, uploads.c.offset == expected_offset)
                .values(
                    offset=offset,
                    hashed_offset=offset if hashed_digest else 0,
                    hashed_digest=hashed_digest,
                    updated_at=now(),
                )
            )
            if result.rowcount != 1:
                raise Conflict(id)
            return upload_record(
                conn.execute(select(*UPLOAD_COLUMNS).where(uploads.c.id == id)).one()
            )

        return await self._write(run)

    async def complete_upload(
        self,
        id: str,
        repository: str,
        digest: str,
        size: int,
        reservation: Claim,
        journal: Journal = QUIET,
    ) -> None:
        def run(conn: Connection) -> None:
            record_blob(conn, digest, reservation, size)
            link(conn, ensure_repository(conn, repository), digest)
            _DELETE.run(conn, id=id)
            write_journal(conn, journal)

        await self._write(run)

    async def delete_upload(self, id: str) -> bool:
        result = await self._write(
            lambda conn: conn.execute(delete(uploads).where(uploads.c.id == id))
        )
        return result.rowcount > 0
