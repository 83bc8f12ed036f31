"""The SQLAlchemy engine the metadata store runs on, and the transactions it runs there.

SQLite reads run inline in the event loop: a local query costs less than a hop to a thread, and WAL
readers never wait on writers. SQLite writes go to the process's writer thread, which commits
those that wait together (group_commit.py), so that no worker's loop waits for the lock or the
disk. Other databases run each call in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, ParamSpec, TypeVar

from anyio import to_thread
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError

from portside.metadata.group_commit import GroupCommitter
from portside.metadata.prepared import Prepared
from portside.metrics import database as metrics

T = TypeVar("T")
P = ParamSpec("P")

# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race.
LOST_RACE: Final = frozenset({"40P01", "40001"})
# PostgreSQL's disk_full; SQLite's is sqlite3.SQLITE_FULL.
DISK_FULL: Final = "53100"
# What every database call may raise (SQLAlchemy's wrapper of the driver's errors).
DatabaseError: Final = DBAPIError


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


def disk_full(error: BaseException) -> bool:
    """Whether a database error says its disk is full: SQLite's SQLITE_FULL ("database or disk is
    full"), PostgreSQL's disk_full (53100); SQLAlchemy's wrapper of either too."""
    found = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(found, sqlite3.OperationalError):
        return getattr(found, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(found, "sqlstate", None) == DISK_FULL


def lost_race(error: OperationalError) -> bool:
    return getattr(error.orig, "sqlstate", None) in LOST_RACE


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


def _timed(kind: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Time each call into portside_metadata_query_seconds{kind}, in the thread it runs in."""
    timer = metrics.query_seconds.labels(kind)

    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(function)
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timer.observe(time.perf_counter() - started)

        return timed

    return decorate


class Database:
    """One engine, and the transactions the parts of the store run on it: each method of the
    store is one call of _read, _write or _collect."""

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
        # A database in a file: its writes go through the process's writer thread. (One in
        # memory exists in one thread only, and its writes are a test's.)
        self._committer = (
            GroupCommitter(self._begin_write) if self._writer_lock is not None else None
        )
        self._write_seconds = metrics.query_seconds.labels("write")

    async def close(self) -> None:
        """Idempotent: an app's lifespan and the code that built the store may both close it."""
        if self._committer is not None:
            self._committer.close()
        self.engine.dispose()
        if self._writer_lock is not None:
            self._writer_lock.close()
            self._writer_lock = None

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        if self._inline:
            return self._read_sync(fn)
        return await to_thread.run_sync(self._read_sync, fn)

    @_timed("read")
    def _read_sync(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            return fn(conn)

    async def _first(self, query: Prepared, **values: object) -> tuple[Any, ...] | None:
        """The first row of a prepared SELECT, None if there is none."""
        if self._inline:
            return self._first_sync(query, values)
        return await to_thread.run_sync(self._first_sync, query, values)

    @_timed("read")
    def _first_sync(self, query: Prepared, values: dict[str, object]) -> tuple[Any, ...] | None:
        dialect = self.engine.dialect
        connection = self.engine.raw_connection()
        try:
            return query.compiled(dialect).execute(connection, dialect, values).first()
        finally:
            connection.close()

    async def _write(self, fn: Callable[[Connection], T], durable: bool = True) -> T:
        """fn in a write transaction; one that need not be durable (reservations: a crash ends
        the writer they protect) commits without waiting for the disk."""
        if self._committer is not None:
            started = time.perf_counter()
            try:
                return await self._committer.run(fn, durable)
            finally:
                self._write_seconds.observe(time.perf_counter() - started)
        if self._inline:
            return self._write_sync(fn, durable)
        return await to_thread.run_sync(self._write_sync, fn, durable)

    @contextlib.contextmanager
    def _begin_write(self, durable: bool) -> Iterator[Connection]:
        """A SQLite write transaction, for the writer thread."""
        assert self._writer_lock is not None
        engine = self._writer if durable else self._light_writer
        with self._writer_lock.held(), engine.begin() as conn:
            yield conn

    @_timed("write")
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
                if not lost_race(error):
                    raise
        return await self._write(fn)
