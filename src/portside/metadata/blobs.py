"""Blob records and their links to repositories: reservations while bytes are written, then
records, links, mounts."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from portside.metadata.base import (
    MARK_TTL,
    QUIET,
    BlobState,
    Claim,
    Conflict,
    Journal,
    Reservation,
    Unrecordable,
    Unreserved,
)
from portside.metadata.engine import Database
from portside.metadata.journal import write_journal
from portside.metadata.prepared import Prepared
from portside.metadata.statements import (
    ensure_repository,
    find_repository,
    insert_missing,
    now,
    utc,
)
from portside.metadata.tables import (
    BLOB_FORGETS_ROW,
    blob_forgets,
    blob_reservations,
    blobs,
    repositories,
    repository_blobs,
)

# A blob's size once its bytes are stored: anywhere, and readable in one repository.
_STORED_SIZE = Prepared(
    select(blobs.c.size).where(
        blobs.c.digest == bindparam("digest"), blobs.c.state == BlobState.STORED
    )
)
_LINKED_SIZE = Prepared(
    select(blobs.c.size)
    .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
    .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
    .where(
        repositories.c.name == bindparam("repository"),
        blobs.c.digest == bindparam("digest"),
        blobs.c.state == BlobState.STORED,
    )
)

# A push's reservation of a blob: taken, ended by the record of the blob, or released.
_BLOB_STATE = Prepared(
    select(blobs.c.state, blobs.c.marked_at)
    .where(blobs.c.digest == bindparam("digest"))
    .with_for_update()
)
_RESERVE = Prepared(
    insert(blob_reservations).values(
        token=bindparam("token"), digest=bindparam("digest"), created_at=bindparam("created_at")
    )
)
_END_RESERVATION = Prepared(
    delete(blob_reservations).where(
        blob_reservations.c.token == bindparam("token"),
        blob_reservations.c.digest == bindparam("digest"),
    )
)
_RELEASE = Prepared(
    delete(blob_reservations).where(blob_reservations.c.token == bindparam("token"))
)
_STORED = Prepared(
    update(blobs).where(blobs.c.digest == bindparam("digest")).values(state=BlobState.STORED)
)

# A record without a reservation (base.py Unreserved): the count of forgotten blobs (0 while
# its row is not there yet) and the blob's state, read before its bytes are written and again
# in its record.
_FORGOTTEN = func.coalesce(
    select(blob_forgets.c.forgotten).where(blob_forgets.c.id == BLOB_FORGETS_ROW).scalar_subquery(),
    0,
)
_CHECK = Prepared(
    select(
        _FORGOTTEN,
        select(blobs.c.state).where(blobs.c.digest == bindparam("digest")).scalar_subquery(),
    )
)
_COUNT_FORGOTTEN = Prepared(select(_FORGOTTEN))


def record_blob(conn: Connection, digest: str, reservation: Claim, size: int) -> None:
    """Record the blob as stored and end its reservation; Conflict if it has ended. Unreserved:
    Unrecordable unless its bytes are sure to be in place (base.py Unreserved)."""
    if isinstance(reservation, Unreserved):
        _record_unreserved(conn, digest, reservation, size)
        return
    if _END_RESERVATION.run(conn, token=reservation, digest=digest).rowcount != 1:
        raise Conflict(f"the reservation of {digest} has ended")
    _STORED.run(conn, digest=digest)


def _record_unreserved(conn: Connection, digest: str, claim: Unreserved, size: int) -> None:
    # The blob's row first, locked on PostgreSQL: a collector marking it now has marked it
    # (DELETING below) or waits and then finds it linked. A collector deletes bytes only once it
    # has marked their row or claimed them without one, and forgets the row after: so with no
    # blob forgotten since the writer looked and this one not marked now, the bytes the writer
    # wrote, or found stored, are in place.
    row = _BLOB_STATE.run(conn, digest=digest).first()
    if _COUNT_FORGOTTEN.run(conn).scalar() != claim.forgotten:
        raise Unrecordable(f"a collector forgot blobs since {digest} was written")
    if row is None:
        if insert_missing(
            conn, blobs, digest=digest, size=size, created_at=now(), state=BlobState.STORED
        ):
            return
        row = _BLOB_STATE.run(conn, digest=digest).first()  # a collector's orphan, or a writer's
        if row is None:
            raise Unrecordable(f"{digest} was forgotten meanwhile")
    state = BlobState(row[0])
    if state is BlobState.DELETING or (claim.stored and state is not BlobState.STORED):
        raise Unrecordable(f"{digest} is {state}")
    _STORED.run(conn, digest=digest)


def link(conn: Connection, repository_id: int, digest: str) -> None:
    insert_missing(
        conn, repository_blobs, repository_id=repository_id, digest=digest, created_at=now()
    )


class SqlBlobs(Database):
    async def blob_size(self, digest: str) -> int | None:
        row = await self._first(_STORED_SIZE, digest=digest)
        return None if row is None else int(row[0])

    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        row = await self._first(_LINKED_SIZE, repository=repository, digest=digest)
        return None if row is None else int(row[0])

    async def reserve_blob(self, digest: str, size: int, token: str) -> Reservation:
        def run(conn: Connection) -> Reservation:
            stamp = now()
            for _ in range(10):
                insert_missing(
                    conn, blobs, digest=digest, size=size, created_at=stamp, state=BlobState.PENDING
                )
                row = _BLOB_STATE.run(conn, digest=digest).first()
                if row is not None:  # else forgotten by a collector in between: again
                    break
            else:
                raise Conflict(digest)
            state, marked_at = BlobState(row[0]), row[1]
            if state is BlobState.DELETING:
                if marked_at is not None and utc(marked_at) > stamp - MARK_TTL:
                    return Reservation.BUSY
                # Its collector died before it was done: the blob is this writer's to store.
                conn.execute(
                    update(blobs)
                    .where(blobs.c.digest == digest)
                    .values(
                        state=BlobState.PENDING,
                        size=size,
                        created_at=stamp,
                        marked_at=None,
                        marked_by=None,
                    )
                )
            _RESERVE.run(conn, token=token, digest=digest, created_at=stamp)
            return Reservation.STORED if state is BlobState.STORED else Reservation.ABSENT

        return await self._write(run, durable=False)

    async def release_blob(self, token: str) -> None:
        await self._write(lambda conn: _RELEASE.run(conn, token=token), durable=False)

    async def check_blob(self, digest: str) -> Unreserved | None:
        row = await self._first(_CHECK, digest=digest)
        if row is None or row[1] == BlobState.DELETING:
            return None
        return Unreserved(int(row[0]), stored=row[1] == BlobState.STORED)

    async def link_blob(
        self, repository: str, digest: str, size: int, reservation: Claim, journal: Journal = QUIET
    ) -> None:
        def run(conn: Connection) -> None:
            record_blob(conn, digest, reservation, size)
            link(conn, ensure_repository(conn, repository), digest)
            write_journal(conn, journal)

        await self._write(run)

    async def mount_blob(
        self, repository: str, digest: str, source: str, journal: Journal = QUIET
    ) -> int | None:
        def run(conn: Connection) -> int | None:
            source_id = find_repository(conn, source)
            if source_id is None:
                return None
            # Holding the source's link and the blob's record keeps a collector from either.
            size: int | None = conn.scalar(
                select(blobs.c.size)
                .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
                .where(
                    repository_blobs.c.repository_id == source_id,
                    blobs.c.digest == digest,
                    blobs.c.state == BlobState.STORED,
                )
                .with_for_update(read=True)
            )
            if size is not None:
                link(conn, ensure_repository(conn, repository), digest)
                write_journal(conn, journal)
            return size

        return await self._write(run)

    async def unlink_blob(self, repository: str, digest: str, journal: Journal = QUIET) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return False
            result = conn.execute(
                delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repository_id,
                    repository_blobs.c.digest == digest,
                )
            )
            if result.rowcount == 0:
                return False
            write_journal(conn, journal)
            return True

        return await self._write(run)
