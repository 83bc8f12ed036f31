"""The metadata store on SQLAlchemy Core: SQLite (WAL) embedded, PostgreSQL for scale-out.

SQLite calls run inline in the event loop: a local query costs less than a hop to a thread, and WAL
readers never wait on writers. Other databases run each call in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from anyio import to_thread
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from portside.metadata.base import (
    ARTIFACT_TYPE_MAX,
    MARK_TTL,
    REFRESH_PRUNE_BATCH,
    BlobRecord,
    BlobState,
    Conflict,
    Lease,
    LinkRecord,
    Manifest,
    ManifestRecord,
    Missing,
    Reference,
    ReferenceKind,
    ReferenceRecord,
    RefreshToken,
    RepositorySummary,
    Reservation,
    ReservationRecord,
    Snapshot,
    TagRecord,
    Upload,
)
from portside.metadata.tables import (
    blob_reservations,
    blobs,
    cached_manifests,
    cached_tags,
    leases,
    manifest_references,
    manifests,
    refresh_tokens,
    repositories,
    repository_blobs,
    tags,
    uploads,
)

T = TypeVar("T")

# Digests per IN (...) list, well under SQLite's 32766 bound variables.
CHUNK: Final = 500
# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race.
LOST_RACE: Final = frozenset({"40P01", "40001"})
# PostgreSQL's disk_full; SQLite's is sqlite3.SQLITE_FULL.
DISK_FULL: Final = "53100"
# What every database call may raise (SQLAlchemy's wrapper of the driver's errors).
DatabaseError: Final = DBAPIError


def now() -> datetime:
    return datetime.now(UTC)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event, not pysqlite, decide when and how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit the client was told about survives a power cut, not only a crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the write lock up front, so a read-then-write transaction never fails to
    # upgrade its lock; readers start deferred and, in WAL mode, never wait.
    options = conn.get_execution_options()
    # A transaction that need not survive a power cut commits without an fsync (NORMAL); the
    # next FULL commit makes it durable too, since the WAL is written in order.
    synchronous = "FULL" if options.get("portside_durable", True) else "NORMAL"
    if conn.connection.info.get("synchronous", "FULL") != synchronous:
        conn.exec_driver_sql(f"PRAGMA synchronous={synchronous}")
        conn.connection.info["synchronous"] = synchronous
    immediate = options.get("portside_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=4,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _upsert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that takes ON CONFLICT clauses, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _insert_missing(conn: Connection, table: Table, **values: Any) -> bool:
    """Insert a row unless one with the same key is there, even when a concurrent transaction
    (another worker, another instance) is inserting it: then wait for it, and skip. Whether
    the row was inserted (RETURNING tells; rowcount is -1 on PostgreSQL)."""
    key = next(iter(table.primary_key))
    statement = _upsert(conn, table).values(**values).on_conflict_do_nothing().returning(key)
    return conn.execute(statement).first() is not None


_MANIFEST_COLUMNS = (
    manifests.c.digest,
    manifests.c.media_type,
    manifests.c.size,
    manifests.c.artifact_type,
    manifests.c.subject,
    manifests.c.annotations,
    manifests.c.description,
)


def _manifest(repository: str, row: Any) -> Manifest:
    return Manifest(repository, *row)


def _chunks(items: Iterable[str]) -> Iterator[list[str]]:
    """items, sorted (so that rows are locked in one order), in lists of at most CHUNK."""
    ordered = sorted(items)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def _lock_older(
    conn: Connection,
    digest: ColumnElement[str],
    created_at: ColumnElement[datetime],
    where: ColumnElement[bool],
    digests: Collection[str],
    before: datetime,
) -> set[str]:
    """The digests among digests whose rows (where) were created before `before`, locked for this
    transaction; rows a concurrent writer holds are skipped, not waited for."""
    found: set[str] = set()
    for chunk in _chunks(digests):
        found.update(
            conn.scalars(
                select(digest)
                .where(where, digest.in_(chunk), created_at < before)
                .order_by(digest)
                .with_for_update(skip_locked=True)
            )
        )
    return found


def disk_full(error: BaseException) -> bool:
    """Whether a database error says its disk is full: SQLite's SQLITE_FULL ("database or disk is
    full"), PostgreSQL's disk_full (53100); SQLAlchemy's wrapper of either too."""
    found = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(found, sqlite3.OperationalError):
        return getattr(found, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(found, "sqlstate", None) == DISK_FULL


def _lost_race(error: OperationalError) -> bool:
    return getattr(error.orig, "sqlstate", None) in LOST_RACE


def _hold(conn: Connection, table: Table, where: ColumnElement[bool], **values: Any) -> bool:
    """Insert a row unless it is there, then hold it (FOR SHARE) until the transaction ends, so
    that no concurrent transaction deletes it meanwhile; whether this transaction inserted it.
    A row a concurrent transaction deleted between the two steps is inserted again."""
    for _ in range(10):
        inserted = _insert_missing(conn, table, **values)
        held = select(*table.primary_key).where(where).with_for_update(read=True)
        if conn.execute(held).first() is not None:
            return inserted
    raise Conflict(f"{table.name}: deleted and inserted again ten times")


def _before_nul(value: str) -> str:
    """A `last` read up to its first NUL. No name or tag holds one (PostgreSQL text cannot), so
    the names after "a\\0..." in code-point order are exactly those after "a": the same answer
    SQLite gives by comparing bytes, without sending PostgreSQL what it refuses."""
    return value.partition("\x00")[0]


def _utc(value: datetime) -> datetime:
    # SQLite stores no time zone: it hands back, naive, the UTC time it was given.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _upload(row: Any) -> Upload:
    return Upload(
        id=row.id,
        repository=row.repository,
        offset=row.offset,
        hashed_offset=row.hashed_offset,
        hashed_digest=row.hashed_digest,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        part=row.part,
    )


class _WriterLock:
    """Serializes SQLite writers of all worker processes with flock, which hands the lock over the
    moment it is released; SQLite's own busy handler polls with sleeps of up to 100 ms."""

    def __init__(self, database: str) -> None:
        self._fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class SqlMetadataStore:
    """MetadataStore over one SQLAlchemy engine; every method is one transaction."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._writer = self.engine.execution_options(portside_write=True)
        self._light_writer = self.engine.execution_options(
            portside_write=True, portside_durable=False
        )
        self._inline = url.startswith("sqlite")
        database = self.engine.url.database
        self._writer_lock = (
            _WriterLock(database) if self._inline and database and database != ":memory:" else None
        )

    async def close(self) -> None:
        self.engine.dispose()
        if self._writer_lock is not None:
            self._writer_lock.close()

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        if self._inline:
            with self.engine.connect() as conn:
                return fn(conn)
        return await to_thread.run_sync(self._read_sync, fn)

    def _read_sync(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    async def _write(self, fn: Callable[[Connection], T], durable: bool = True) -> T:
        """fn in a write transaction; one that need not be durable (reservations: a crash ends
        the writer they protect) commits without waiting for the disk."""
        if self._inline:
            return self._write_sync(fn, durable)
        return await to_thread.run_sync(self._write_sync, fn, durable)

    def _write_sync(self, fn: Callable[[Connection], T], durable: bool = True) -> T:
        engine = self._writer if durable else self._light_writer
        with contextlib.ExitStack() as stack:
            if self._writer_lock is not None:
                stack.enter_context(self._writer_lock.held())
            conn = stack.enter_context(engine.begin())
            if not durable and conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            return fn(conn)

    async def _collect(self, fn: Callable[[Connection], T]) -> T:
        """A collector's write: tried again when PostgreSQL picked it to lose a deadlock with a
        writer (possible only for contrived manifests), since the collector can always wait."""
        for _ in range(4):
            try:
                return await self._write(fn)
            except OperationalError as error:
                if not _lost_race(error):
                    raise
        return await self._write(fn)

    # repositories

    @staticmethod
    def _repository_id(conn: Connection, name: str) -> int | None:
        return conn.scalar(select(repositories.c.id).where(repositories.c.name == name))

    @classmethod
    def _ensure_repository(cls, conn: Connection, name: str) -> int:
        found = cls._repository_id(conn, name)
        if found is None:
            _insert_missing(conn, repositories, name=name, created_at=now())
            found = cls._repository_id(conn, name)
            assert found is not None
        return found

    def _lexical(self, column: ColumnElement[str]) -> ColumnElement[str]:
        """column ordered by code point, as the spec's "lexical" order is, whatever the locale
        of the database (SQLite compares bytes already)."""
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    async def repository_exists(self, repository: str) -> bool:
        return await self._read(lambda conn: self._repository_id(conn, repository) is not None)

    # blobs

    async def blob_size(self, digest: str) -> int | None:
        query = select(blobs.c.size).where(
            blobs.c.digest == digest, blobs.c.state == BlobState.STORED
        )
        return await self._read(lambda conn: conn.scalar(query))

    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        query = (
            select(blobs.c.size)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
            .where(
                repositories.c.name == repository,
                blobs.c.digest == digest,
                blobs.c.state == BlobState.STORED,
            )
        )
        return await self._read(lambda conn: conn.scalar(query))

    async def reserve_blob(self, digest: str, size: int, token: str) -> Reservation:
        def run(conn: Connection) -> Reservation:
            stamp = now()
            for _ in range(10):
                _insert_missing(
                    conn, blobs, digest=digest, size=size, created_at=stamp, state=BlobState.PENDING
                )
                row = conn.execute(
                    select(blobs.c.state, blobs.c.marked_at)
                    .where(blobs.c.digest == digest)
                    .with_for_update()
                ).first()
                if row is not None:  # else forgotten by a collector in between: again
                    break
            else:
                raise Conflict(digest)
            state = BlobState(row.state)
            if state is BlobState.DELETING:
                if row.marked_at is not None and _utc(row.marked_at) > stamp - MARK_TTL:
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
            conn.execute(
                insert(blob_reservations).values(token=token, digest=digest, created_at=stamp)
            )
            return Reservation.STORED if state is BlobState.STORED else Reservation.ABSENT

        return await self._write(run, durable=False)

    async def release_blob(self, token: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                delete(blob_reservations).where(blob_reservations.c.token == token)
            ),
            durable=False,
        )

    @staticmethod
    def _record(conn: Connection, digest: str, reservation: str) -> None:
        """Record the blob as stored and end its reservation; Conflict if it has ended."""
        ended = conn.execute(
            delete(blob_reservations).where(
                blob_reservations.c.token == reservation, blob_reservations.c.digest == digest
            )
        )
        if ended.rowcount != 1:
            raise Conflict(f"the reservation of {digest} has ended")
        conn.execute(update(blobs).where(blobs.c.digest == digest).values(state=BlobState.STORED))

    @staticmethod
    def _link(conn: Connection, repository_id: int, digest: str) -> None:
        _insert_missing(
            conn, repository_blobs, repository_id=repository_id, digest=digest, created_at=now()
        )

    async def link_blob(self, repository: str, digest: str, size: int, reservation: str) -> None:
        def run(conn: Connection) -> None:
            self._record(conn, digest, reservation)
            self._link(conn, self._ensure_repository(conn, repository), digest)

        await self._write(run)

    async def complete_upload(
        self, id: str, repository: str, digest: str, size: int, reservation: str
    ) -> None:
        def run(conn: Connection) -> None:
            self._record(conn, digest, reservation)
            self._link(conn, self._ensure_repository(conn, repository), digest)
            conn.execute(delete(uploads).where(uploads.c.id == id))

        await self._write(run)

    async def mount_blob(self, repository: str, digest: str, source: str) -> int | None:
        def run(conn: Connection) -> int | None:
            source_id = self._repository_id(conn, source)
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
                self._link(conn, self._ensure_repository(conn, repository), digest)
            return size

        return await self._write(run)

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return False
            result = conn.execute(
                delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repository_id,
                    repository_blobs.c.digest == digest,
                )
            )
            return result.rowcount > 0

        return await self._write(run)

    # upload sessions

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
        await self._write(lambda conn: conn.execute(insert(uploads).values(**values)))
        return Upload(id, repository, 0, 0, None, stamp, stamp)

    async def get_upload(self, repository: str, id: str) -> Upload | None:
        if "\x00" in id or "\x00" in repository:  # in no row; and PostgreSQL refuses it as text
            return None
        query = select(uploads).where(uploads.c.id == id, uploads.c.repository == repository)
        row = await self._read(lambda conn: conn.execute(query).first())
        return None if row is None else _upload(row)

    async def advance_upload(
        self,
        id: str,
        expected_offset: int,
        offset: int,
        hashed_digest: str | None,
        part: str | None = None,
    ) -> Upload:
        def run(conn: Connection) -> Upload:
            result = conn.execute(
                update(uploads)
                .where(uploads.c.id == id, uploads.c.offset == expected_offset)
                .values(
                    offset=offset,
                    hashed_offset=offset if hashed_digest else 0,
                    hashed_digest=hashed_digest,
                    part=part,
                    updated_at=now(),
                )
            )
            if result.rowcount != 1:
                raise Conflict(id)
            return _upload(conn.execute(select(uploads).where(uploads.c.id == id)).one())

        return await self._write(run)

    async def delete_upload(self, id: str) -> bool:
        result = await self._write(
            lambda conn: conn.execute(delete(uploads).where(uploads.c.id == id))
        )
        return result.rowcount > 0

    # manifests and tags

    async def missing_references(
        self, repository: str, references: Sequence[Reference]
    ) -> list[str]:
        if not references:
            return []
        blob_digests = {r.digest for r in references if r.kind is ReferenceKind.BLOB}
        manifest_digests = {r.digest for r in references if r.kind is ReferenceKind.MANIFEST}

        def run(conn: Connection) -> list[str]:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return sorted(blob_digests | manifest_digests)
            found = set(
                conn.scalars(
                    select(repository_blobs.c.digest).where(
                        repository_blobs.c.repository_id == repository_id,
                        repository_blobs.c.digest.in_(blob_digests),
                    )
                )
            ) | set(
                conn.scalars(
                    select(manifests.c.digest).where(
                        manifests.c.repository_id == repository_id,
                        manifests.c.digest.in_(manifest_digests),
                    )
                )
            )
            return sorted((blob_digests | manifest_digests) - found)

        return await self._read(run)

    @staticmethod
    def _hold_references(
        conn: Connection, repository_id: int, references: Sequence[Reference]
    ) -> list[str]:
        """Hold (FOR SHARE) the links of the blobs and the child manifests that references
        name, so that no collector removes them before the transaction ends; the digests not
        found."""
        wanted = {kind: {r.digest for r in references if r.kind is kind} for kind in ReferenceKind}
        tables = {
            ReferenceKind.BLOB: (repository_blobs.c.repository_id, repository_blobs.c.digest),
            ReferenceKind.MANIFEST: (manifests.c.repository_id, manifests.c.digest),
        }
        missing: set[str] = set()
        for kind, (owner, digest) in tables.items():
            found: set[str] = set()
            for chunk in _chunks(wanted[kind]):
                found.update(
                    conn.scalars(
                        select(digest)
                        .where(owner == repository_id, digest.in_(chunk))
                        .order_by(digest)
                        .with_for_update(read=True)
                    )
                )
            missing |= wanted[kind] - found
        return sorted(missing)

    async def put_manifest(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: str,
    ) -> None:
        def run(conn: Connection) -> None:
            repository_id = self._ensure_repository(conn, manifest.repository)
            missing = self._hold_references(conn, repository_id, references)
            if missing:
                raise Missing(missing)
            self._put_manifest(conn, repository_id, manifest, references, tag, reservation)
            if tag is not None:
                # Pushed here: no longer a cached tag, whatever its upstream holds under it.
                conn.execute(
                    delete(cached_tags).where(
                        cached_tags.c.repository_id == repository_id, cached_tags.c.name == tag
                    )
                )

        await self._write_manifest(run, manifest.digest)

    async def _write_manifest(self, run: Callable[[Connection], None], digest: str) -> None:
        try:
            await self._write(run)
        except IntegrityError as error:  # lost a race with another writer
            raise Conflict(digest) from error
        except OperationalError as error:
            if not _lost_race(error):
                raise
            raise Conflict(digest) from error

    def _put_manifest(
        self,
        conn: Connection,
        repository_id: int,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: str,
    ) -> None:
        self._record(conn, manifest.digest, reservation)
        # Held, so that a collector deleting an untagged manifest cannot take the record or
        # the link away from under a tag or a push of the same manifest.
        inserted = _hold(
            conn,
            manifests,
            and_(
                manifests.c.repository_id == repository_id,
                manifests.c.digest == manifest.digest,
            ),
            repository_id=repository_id,
            digest=manifest.digest,
            media_type=manifest.media_type,
            size=manifest.size,
            artifact_type=manifest.artifact_type,
            subject=manifest.subject,
            annotations=manifest.annotations,
            description=manifest.description,
            created_at=now(),
        )
        _hold(
            conn,
            repository_blobs,
            and_(
                repository_blobs.c.repository_id == repository_id,
                repository_blobs.c.digest == manifest.digest,
            ),
            repository_id=repository_id,
            digest=manifest.digest,
            created_at=now(),
        )
        if inserted and references:
            conn.execute(
                insert(manifest_references),
                [
                    {
                        "repository_id": repository_id,
                        "manifest_digest": manifest.digest,
                        "digest": r.digest,
                        "kind": r.kind.value,
                    }
                    for r in {r.digest: r for r in references}.values()
                ],
            )
        if tag is not None:
            self._set_tag(conn, repository_id, tag, manifest.digest)

    @staticmethod
    def _set_tag(conn: Connection, repository_id: int, tag: str, digest: str) -> None:
        stamp = now()
        conn.execute(
            _upsert(conn, tags)
            .values(repository_id=repository_id, name=tag, digest=digest, updated_at=stamp)
            .on_conflict_do_update(
                index_elements=[tags.c.repository_id, tags.c.name],
                set_={"digest": digest, "updated_at": stamp},
            )
        )

    async def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        if ":" in reference:
            condition = manifests.c.digest == reference
            query = select(*_MANIFEST_COLUMNS).join(
                repositories, repositories.c.id == manifests.c.repository_id
            )
        else:
            condition = tags.c.name == reference
            query = (
                select(*_MANIFEST_COLUMNS)
                .select_from(tags)
                .join(repositories, repositories.c.id == tags.c.repository_id)
                .join(
                    manifests,
                    and_(
                        manifests.c.repository_id == tags.c.repository_id,
                        manifests.c.digest == tags.c.digest,
                    ),
                )
            )
        query = query.where(repositories.c.name == repository, condition)
        row = await self._read(lambda conn: conn.execute(query).first())
        return None if row is None else _manifest(repository, row)

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return False
            return self._delete_manifest(conn, repository_id, digest)

        return await self._write(run)

    @staticmethod
    def _delete_manifest(conn: Connection, repository_id: int, digest: str) -> bool:
        """The manifest, its tags, its references and the link of its own digest."""
        result = conn.execute(
            delete(manifests).where(
                manifests.c.repository_id == repository_id, manifests.c.digest == digest
            )
        )
        if result.rowcount == 0:
            return False
        conn.execute(
            delete(tags).where(tags.c.repository_id == repository_id, tags.c.digest == digest)
        )
        conn.execute(
            delete(manifest_references).where(
                manifest_references.c.repository_id == repository_id,
                manifest_references.c.manifest_digest == digest,
            )
        )
        conn.execute(
            delete(repository_blobs).where(
                repository_blobs.c.repository_id == repository_id,
                repository_blobs.c.digest == digest,
            )
        )
        conn.execute(
            delete(cached_manifests).where(
                cached_manifests.c.repository_id == repository_id,
                cached_manifests.c.digest == digest,
            )
        )
        return True

    async def delete_tag(self, repository: str, tag: str) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return False
            result = conn.execute(
                delete(tags).where(tags.c.repository_id == repository_id, tags.c.name == tag)
            )
            conn.execute(
                delete(cached_tags).where(
                    cached_tags.c.repository_id == repository_id, cached_tags.c.name == tag
                )
            )
            return result.rowcount > 0

        return await self._write(run)

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str]:
        query = (
            select(tags.c.name)
            .join(repositories, repositories.c.id == tags.c.repository_id)
            .where(repositories.c.name == repository)
            .order_by(self._lexical(tags.c.name))
        )
        if last is not None:
            query = query.where(self._lexical(tags.c.name) > _before_nul(last))
        if n is not None:
            query = query.limit(n)
        return await self._read(lambda conn: list(conn.scalars(query)))

    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
        name = self._lexical(repositories.c.name)
        query = select(repositories.c.name).where(has_manifest).order_by(name)
        if last is not None:
            query = query.where(name > _before_nul(last))
        if n is not None:
            query = query.limit(n)
        return await self._read(lambda conn: list(conn.scalars(query)))

    def _summaries(self, query: str) -> Select[tuple[str, str | None]]:
        """Repositories with a manifest, their descriptions, matching query, ordered by name."""
        newest_description = (
            select(manifests.c.description)
            .where(
                manifests.c.repository_id == repositories.c.id,
                manifests.c.description.is_not(None),
            )
            .order_by(manifests.c.created_at.desc(), manifests.c.digest.desc())
            .limit(1)
            .scalar_subquery()
        )
        has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
        summaries = (
            select(repositories.c.name, newest_description.label("description"))
            .where(has_manifest)
            .subquery()
        )
        found = select(summaries.c.name, summaries.c.description).order_by(
            self._lexical(summaries.c.name)
        )
        if query:
            # lower() folds ASCII only on SQLite, all of Unicode on PostgreSQL; names are ASCII.
            found = found.where(
                or_(
                    summaries.c.name.icontains(query, autoescape=True),
                    summaries.c.description.icontains(query, autoescape=True),
                )
            )
        return found

    async def search_repositories(
        self,
        query: str,
        offset: int,
        limit: int,
        visible: Callable[[str], bool] | None = None,
    ) -> tuple[int, list[RepositorySummary]]:
        if "\x00" in query:  # in no name or description; and PostgreSQL refuses it as text
            return 0, []
        found = self._summaries(query)
        if visible is None:
            counted = select(func.count()).select_from(found.order_by(None).subquery())

            def run(conn: Connection) -> tuple[int, list[RepositorySummary]]:
                total = conn.scalar(counted) or 0
                rows = conn.execute(found.offset(offset).limit(limit)).all()
                return total, [RepositorySummary(row.name, row.description) for row in rows]

            return await self._read(run)
        # The predicate runs here, outside the transaction: it is the caller's code.
        rows = await self._read(lambda conn: conn.execute(found).all())
        shown = [RepositorySummary(row.name, row.description) for row in rows if visible(row.name)]
        return len(shown), shown[offset : offset + limit]

    async def list_referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[Manifest]:
        if artifact_type is not None and (
            "\x00" in artifact_type or len(artifact_type) > ARTIFACT_TYPE_MAX
        ):
            return []  # no manifest has one (registry/manifests.py refuses it), nor could keep it
        query = (
            select(*_MANIFEST_COLUMNS)
            .join(repositories, repositories.c.id == manifests.c.repository_id)
            .where(repositories.c.name == repository, manifests.c.subject == subject)
            .order_by(manifests.c.created_at, manifests.c.digest)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [_manifest(repository, row) for row in rows]

    # garbage collection: every deletion locks its candidates, skipping those a writer holds,
    # and re-checks them in later statements, which see what such writers committed

    async def gc_snapshot(self) -> Snapshot:
        def run(conn: Connection) -> Snapshot:
            if conn.dialect.name == "postgresql":  # one snapshot for every query below
                conn.execution_options(isolation_level="REPEATABLE READ")

            def rows(*columns: Any) -> Sequence[Any]:
                return conn.execute(select(*columns)).all()

            names = dict(rows(repositories.c.id, repositories.c.name))
            m, t, r, rb, b, br = (
                manifests.c,
                tags.c,
                manifest_references.c,
                repository_blobs.c,
                blobs.c,
                blob_reservations.c,
            )
            return Snapshot(
                manifests=tuple(
                    ManifestRecord(names[row[0]], row[1], row[2], _utc(row[3]))
                    for row in rows(m.repository_id, m.digest, m.subject, m.created_at)
                ),
                tags=tuple(
                    TagRecord(names[row[0]], row[1], row[2])
                    for row in rows(t.repository_id, t.name, t.digest)
                ),
                references=tuple(
                    ReferenceRecord(names[row[0]], row[1], row[2], ReferenceKind(row[3]))
                    for row in rows(r.repository_id, r.manifest_digest, r.digest, r.kind)
                    if row[0] in names
                ),
                links=tuple(
                    LinkRecord(names[row[0]], row[1], _utc(row[2]))
                    for row in rows(rb.repository_id, rb.digest, rb.created_at)
                ),
                blobs=tuple(
                    BlobRecord(
                        row[0],
                        row[1],
                        BlobState(row[2]),
                        _utc(row[3]),
                        None if row[4] is None else _utc(row[4]),
                    )
                    for row in rows(b.digest, b.size, b.state, b.created_at, b.marked_at)
                ),
                reservations=tuple(
                    ReservationRecord(row[0], _utc(row[1]))
                    for row in rows(br.digest, br.created_at)
                ),
                uploads=tuple(_upload(row) for row in conn.execute(select(uploads))),
            )

        return await self._read(run)

    @staticmethod
    def _matching(
        conn: Connection,
        column: ColumnElement[str],
        digests: Collection[str],
        *where: ColumnElement[bool],
    ) -> set[str]:
        """Those of digests that column holds in rows matching where."""
        found: set[str] = set()
        for chunk in _chunks(digests):
            found.update(conn.scalars(select(column).where(column.in_(chunk), *where).distinct()))
        return found

    @classmethod
    def _still_needed(
        cls, conn: Connection, repository_id: int, candidates: set[str], keep_referrers: bool
    ) -> set[str]:
        """The candidates that a manifest outside them needs, or that are tagged."""
        needed = cls._matching(
            conn, tags.c.digest, candidates, tags.c.repository_id == repository_id
        )
        parents: list[tuple[str, str]] = []
        for chunk in _chunks(candidates):
            parents += conn.execute(
                select(manifest_references.c.digest, manifest_references.c.manifest_digest).where(
                    manifest_references.c.repository_id == repository_id,
                    manifest_references.c.kind == ReferenceKind.MANIFEST,
                    manifest_references.c.digest.in_(chunk),
                )
            ).all()
        needed |= {child for child, parent in parents if parent not in candidates}
        if keep_referrers:
            subjects: list[tuple[str, str]] = []
            for chunk in _chunks(candidates):
                subjects += conn.execute(
                    select(manifests.c.digest, manifests.c.subject).where(
                        manifests.c.repository_id == repository_id,
                        manifests.c.digest.in_(chunk),
                        manifests.c.subject.is_not(None),
                    )
                ).all()
            outside = {subject for _, subject in subjects if subject not in candidates}
            kept = cls._matching(
                conn, manifests.c.digest, outside, manifests.c.repository_id == repository_id
            )
            needed |= {referrer for referrer, subject in subjects if subject in kept}
        return needed & candidates

    async def delete_manifests(
        self, repository: str, digests: Collection[str], before: datetime, keep_referrers: bool
    ) -> list[str]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[str]:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return []
            here = manifests.c.repository_id == repository_id
            candidates = _lock_older(
                conn, manifests.c.digest, manifests.c.created_at, here, digests, before
            )
            # Keeping one candidate may make it need others (its children, its referrers).
            while needed := self._still_needed(conn, repository_id, candidates, keep_referrers):
                candidates -= needed
            for chunk in _chunks(candidates):
                conn.execute(delete(manifests).where(here, manifests.c.digest.in_(chunk)))
                conn.execute(
                    delete(manifest_references).where(
                        manifest_references.c.repository_id == repository_id,
                        manifest_references.c.manifest_digest.in_(chunk),
                    )
                )
                conn.execute(
                    delete(repository_blobs).where(
                        repository_blobs.c.repository_id == repository_id,
                        repository_blobs.c.digest.in_(chunk),
                    )
                )
            return sorted(candidates)

        return await self._collect(run)

    async def delete_dangling_tags(self, repository: str) -> list[str]:
        def run(conn: Connection) -> list[str]:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return []
            has_manifest = exists().where(
                manifests.c.repository_id == tags.c.repository_id,
                manifests.c.digest == tags.c.digest,
            )
            dangling = list(
                conn.scalars(
                    delete(tags)
                    .where(tags.c.repository_id == repository_id, ~has_manifest)
                    .returning(tags.c.name)
                )
            )
            return sorted(dangling)

        return await self._collect(run)

    async def delete_links(
        self, repository: str, digests: Collection[str], before: datetime
    ) -> list[str]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[str]:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return []
            here = repository_blobs.c.repository_id == repository_id
            candidates = _lock_older(
                conn,
                repository_blobs.c.digest,
                repository_blobs.c.created_at,
                here,
                digests,
                before,
            )
            candidates -= self._matching(
                conn,
                manifest_references.c.digest,
                candidates,
                manifest_references.c.repository_id == repository_id,
            )
            candidates -= self._matching(
                conn, manifests.c.digest, candidates, manifests.c.repository_id == repository_id
            )
            for chunk in _chunks(candidates):
                conn.execute(
                    delete(repository_blobs).where(here, repository_blobs.c.digest.in_(chunk))
                )
            return sorted(candidates)

        return await self._collect(run)

    async def drop_reservations(self, before: datetime) -> int:
        before = before.astimezone(UTC)
        result = await self._collect(
            lambda conn: conn.execute(
                delete(blob_reservations).where(blob_reservations.c.created_at < before)
            )
        )
        return result.rowcount

    async def mark_blobs(
        self, digests: Collection[str], before: datetime, token: str
    ) -> dict[str, int]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> dict[str, int]:
            stamp = now()
            garbage_age = or_(
                and_(blobs.c.state != BlobState.DELETING, blobs.c.created_at < before),
                and_(blobs.c.state == BlobState.DELETING, blobs.c.marked_at < stamp - MARK_TTL),
            )
            found: dict[str, int] = {}
            for chunk in _chunks(digests):
                found.update(
                    conn.execute(
                        select(blobs.c.digest, blobs.c.size)
                        .where(blobs.c.digest.in_(chunk), garbage_age)
                        .order_by(blobs.c.digest)
                        .with_for_update(skip_locked=True)
                    ).all()
                )
            used = (
                self._matching(conn, repository_blobs.c.digest, found)
                | self._matching(conn, manifest_references.c.digest, found)
                | self._matching(conn, blob_reservations.c.digest, found)
            )
            marked = {digest: size for digest, size in found.items() if digest not in used}
            for chunk in _chunks(marked):
                conn.execute(
                    update(blobs)
                    .where(blobs.c.digest.in_(chunk))
                    .values(state=BlobState.DELETING, marked_at=stamp, marked_by=token)
                )
            return marked

        return await self._collect(run)

    async def claim_orphans(self, sizes: Mapping[str, int], token: str) -> list[str]:
        def run(conn: Connection) -> list[str]:
            stamp = now()
            return [
                digest
                for digest in sorted(sizes)
                if _insert_missing(
                    conn,
                    blobs,
                    digest=digest,
                    size=sizes[digest],
                    created_at=stamp,
                    state=BlobState.DELETING,
                    marked_at=stamp,
                    marked_by=token,
                )
            ]

        return await self._collect(run)

    async def forget_blobs(self, digests: Collection[str], token: str) -> None:
        def run(conn: Connection) -> None:
            for chunk in _chunks(digests):
                conn.execute(
                    delete(blobs).where(
                        blobs.c.digest.in_(chunk),
                        blobs.c.state == BlobState.DELETING,
                        blobs.c.marked_by == token,
                    )
                )

        await self._collect(run)

    async def expire_uploads(self, ids: Collection[str], before: datetime) -> list[str]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[str]:
            expired: list[str] = []
            for chunk in _chunks(ids):
                expired += conn.scalars(
                    delete(uploads)
                    .where(uploads.c.id.in_(chunk), uploads.c.updated_at < before)
                    .returning(uploads.c.id)
                )
            return sorted(expired)

        return await self._collect(run)

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> Lease:
        def run(conn: Connection) -> Lease:
            stamp = now()
            if _insert_missing(conn, leases, name=name, holder=holder, expires_at=stamp + ttl):
                return Lease(name, holder, stamp + ttl)
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at)
                .where(leases.c.name == name)
                .with_for_update()
            ).one()
            if row.holder != holder and _utc(row.expires_at) > stamp:
                return Lease(name, row.holder, _utc(row.expires_at))
            conn.execute(
                update(leases)
                .where(leases.c.name == name)
                .values(holder=holder, expires_at=stamp + ttl)
            )
            return Lease(name, holder, stamp + ttl)

        return await self._write(run)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            )
        )

    # refresh tokens of the built-in token service (auth/refresh.py, server/refresh.py)

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
            self._prune_refresh_tokens(conn, token.issued_at, REFRESH_PRUNE_BATCH)

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
            issued_at=_utc(row.issued_at),
            expires_at=None if row.expires_at is None else _utc(row.expires_at),
            last_used_at=None if row.last_used_at is None else _utc(row.last_used_at),
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

    async def prune_refresh_tokens(self, before: datetime, limit: int | None = None) -> int:
        return await self._write(lambda conn: self._prune_refresh_tokens(conn, before, limit))

    @staticmethod
    def _prune_refresh_tokens(conn: Connection, before: datetime, limit: int | None) -> int:
        """Delete at most limit tokens expired before `before`, the earliest first (an index
        range scan); rows a concurrent transaction holds are skipped, not waited for."""
        expired = (
            select(refresh_tokens.c.token_hash)
            .where(refresh_tokens.c.expires_at < before)
            .order_by(refresh_tokens.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        deleted = 0
        for chunk in _chunks(conn.scalars(expired)):
            result = conn.execute(
                delete(refresh_tokens).where(refresh_tokens.c.token_hash.in_(chunk))
            )
            deleted += result.rowcount
        return deleted

    # the pull-through cache

    async def put_cached_manifest(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: str,
        at: datetime,
    ) -> None:
        def run(conn: Connection) -> None:
            repository_id = self._ensure_repository(conn, manifest.repository)
            self._put_manifest(conn, repository_id, manifest, references, tag, reservation)
            conn.execute(
                _upsert(conn, cached_manifests)
                .values(repository_id=repository_id, digest=manifest.digest, pulled_at=at)
                .on_conflict_do_update(
                    index_elements=[cached_manifests.c.repository_id, cached_manifests.c.digest],
                    set_={"pulled_at": at},
                )
            )
            if tag is not None:
                self._check_tag(conn, repository_id, tag, at)

        await self._write_manifest(run, manifest.digest)

    @staticmethod
    def _check_tag(conn: Connection, repository_id: int, tag: str, at: datetime) -> None:
        conn.execute(
            _upsert(conn, cached_tags)
            .values(repository_id=repository_id, name=tag, checked_at=at)
            .on_conflict_do_update(
                index_elements=[cached_tags.c.repository_id, cached_tags.c.name],
                set_={"checked_at": at},
            )
        )

    async def cached_tag(self, repository: str, tag: str) -> datetime | None:
        query = (
            select(cached_tags.c.checked_at)
            .join(repositories, repositories.c.id == cached_tags.c.repository_id)
            .join(
                tags,
                and_(
                    tags.c.repository_id == cached_tags.c.repository_id,
                    tags.c.name == cached_tags.c.name,
                ),
            )
            .where(repositories.c.name == repository, cached_tags.c.name == tag)
        )
        found = await self._read(lambda conn: conn.scalar(query))
        return None if found is None else _utc(found)

    async def touch_cached(
        self, repository: str, digest: str, at: datetime, tag: str | None = None
    ) -> None:
        def run(conn: Connection) -> None:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return
            conn.execute(
                update(cached_manifests)
                .where(
                    cached_manifests.c.repository_id == repository_id,
                    cached_manifests.c.digest == digest,
                    cached_manifests.c.pulled_at < at,
                )
                .values(pulled_at=at)
            )
            if tag is not None:
                self._check_tag(conn, repository_id, tag, at)

        # A pull time lost to a power cut only keeps a cached image a little longer.
        await self._write(run, durable=False)

    async def expired_cached_manifests(self, before: datetime, limit: int) -> list[tuple[str, str]]:
        query = (
            select(repositories.c.name, cached_manifests.c.digest)
            .join(repositories, repositories.c.id == cached_manifests.c.repository_id)
            .where(cached_manifests.c.pulled_at < before)
            .order_by(cached_manifests.c.pulled_at)
            .limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [(row[0], row[1]) for row in rows]

    async def expire_cached_manifest(self, repository: str, digest: str, before: datetime) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return False
            held = conn.scalar(
                select(cached_manifests.c.digest)
                .where(
                    cached_manifests.c.repository_id == repository_id,
                    cached_manifests.c.digest == digest,
                    cached_manifests.c.pulled_at < before,
                )
                .with_for_update()
            )
            if held is None:
                return False  # pulled meanwhile, or gone
            tagged = conn.scalars(
                select(tags.c.name).where(
                    tags.c.repository_id == repository_id, tags.c.digest == digest
                )
            ).all()
            if tagged:
                conn.execute(
                    delete(cached_tags).where(
                        cached_tags.c.repository_id == repository_id,
                        cached_tags.c.name.in_(tagged),
                    )
                )
            self._delete_manifest(conn, repository_id, digest)
            return True

        return await self._collect(run)
