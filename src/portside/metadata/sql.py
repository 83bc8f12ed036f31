"""The metadata store on SQLAlchemy Core: SQLite (WAL) embedded, PostgreSQL for scale-out.

SQLite calls run inline in the event loop: a local query costs less than a hop to a thread, and WAL
readers never wait on writers. Other databases run each call in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from anyio import to_thread
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    create_engine,
    delete,
    event,
    exists,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from portside.metadata.base import Conflict, Manifest, Reference, ReferenceKind, Upload
from portside.metadata.tables import (
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)

T = TypeVar("T")


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
    immediate = conn.get_execution_options().get("portside_write", False)
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
)


def _manifest(repository: str, row: Any) -> Manifest:
    return Manifest(repository, *row)


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

    async def _write(self, fn: Callable[[Connection], T]) -> T:
        if self._inline:
            return self._write_sync(fn)
        return await to_thread.run_sync(self._write_sync, fn)

    def _write_sync(self, fn: Callable[[Connection], T]) -> T:
        if self._writer_lock is None:
            with self._writer.begin() as conn:
                return fn(conn)
        with self._writer_lock.held(), self._writer.begin() as conn:
            return fn(conn)

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
        return await self._read(
            lambda conn: conn.scalar(select(blobs.c.size).where(blobs.c.digest == digest))
        )

    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        query = (
            select(blobs.c.size)
            .join(repository_blobs, repository_blobs.c.digest == blobs.c.digest)
            .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
            .where(repositories.c.name == repository, blobs.c.digest == digest)
        )
        return await self._read(lambda conn: conn.scalar(query))

    @staticmethod
    def _link(conn: Connection, repository_id: int, digest: str, size: int) -> None:
        _insert_missing(conn, blobs, digest=digest, size=size, created_at=now())
        _insert_missing(
            conn, repository_blobs, repository_id=repository_id, digest=digest, created_at=now()
        )

    async def link_blob(self, repository: str, digest: str, size: int) -> None:
        def run(conn: Connection) -> None:
            self._link(conn, self._ensure_repository(conn, repository), digest, size)

        await self._write(run)

    async def complete_upload(self, id: str, repository: str, digest: str, size: int) -> None:
        def run(conn: Connection) -> None:
            self._link(conn, self._ensure_repository(conn, repository), digest, size)
            conn.execute(delete(uploads).where(uploads.c.id == id))

        await self._write(run)

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

    async def put_manifest(
        self, manifest: Manifest, references: Sequence[Reference], tag: str | None
    ) -> None:
        def run(conn: Connection) -> None:
            repository_id = self._ensure_repository(conn, manifest.repository)
            self._link(conn, repository_id, manifest.digest, manifest.size)
            inserted = _insert_missing(
                conn,
                manifests,
                repository_id=repository_id,
                digest=manifest.digest,
                media_type=manifest.media_type,
                size=manifest.size,
                artifact_type=manifest.artifact_type,
                subject=manifest.subject,
                annotations=manifest.annotations,
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

        try:
            await self._write(run)
        except IntegrityError as error:  # lost a race with another writer
            raise Conflict(manifest.digest) from error

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
            in_repository = (manifests.c.repository_id == repository_id,)
            result = conn.execute(
                delete(manifests).where(*in_repository, manifests.c.digest == digest)
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
            return True

        return await self._write(run)

    async def delete_tag(self, repository: str, tag: str) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = self._repository_id(conn, repository)
            if repository_id is None:
                return False
            result = conn.execute(
                delete(tags).where(tags.c.repository_id == repository_id, tags.c.name == tag)
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
            query = query.where(self._lexical(tags.c.name) > last)
        if n is not None:
            query = query.limit(n)
        return await self._read(lambda conn: list(conn.scalars(query)))

    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
        name = self._lexical(repositories.c.name)
        query = select(repositories.c.name).where(has_manifest).order_by(name)
        if last is not None:
            query = query.where(name > last)
        if n is not None:
            query = query.limit(n)
        return await self._read(lambda conn: list(conn.scalars(query)))

    async def list_referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[Manifest]:
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
