"""SQLite writes of one process, run by one thread and committed together.

SQLite has one writer at a time, and a durable commit waits for the disk. Run inline on the
event loop, every write held its worker still through its wait for the lock and its fsync, so
each worker stalled on every other worker's commits. Here the event loop hands a write to the
process's writer thread and goes on serving. The thread runs every write waiting at that moment
in one transaction, each in a savepoint of its own (one that raises leaves the others), and
commits them with one fsync; each caller hears back once that commit is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from sqlalchemy import Connection

T = TypeVar("T")

# Writes committed together at most: a bound on the time the first of them waits for the rest.
BATCH: Final = 64

Begin = Callable[[bool], contextlib.AbstractContextManager[Connection]]


@dataclass(slots=True)
class _Write:
    fn: Callable[[Connection], Any]
    durable: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    value: Any = None
    error: BaseException | None = field(default=None)


class GroupCommitter:
    """begin(durable) opens a write transaction (the writer lock held) and commits it on exit,
    durably if asked."""

    def __init__(self, begin: Begin) -> None:
        self._begin = begin
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()

    async def run(self, fn: Callable[[Connection], T], durable: bool) -> T:
        loop = asyncio.get_running_loop()
        write = _Write(fn, durable, loop, loop.create_future())
        self._started()
        self._queue.put(write)
        # A cancelled caller does not undo its write (it may be committed already), as a write
        # handed to a thread on PostgreSQL is not undone either.
        result: T = await write.future
        return result

    def close(self) -> None:
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            thread.join()
        self._thread = None

    def _started(self) -> None:
        # Started in the process that writes: a thread does not survive the fork of a worker.
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._start_lock:
            if self._thread is None or self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._serve, name="portside-sqlite-writer", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            stop = False
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Write]) -> None:
        try:
            with self._begin(any(write.durable for write in batch)) as conn:
                if len(batch) == 1:
                    batch[0].value = batch[0].fn(conn)
                else:
                    for write in batch:
                        _in_savepoint(conn, write)
        except BaseException as error:  # every caller hears of it: none is left waiting
            for write in batch:
                if write.error is None:
                    write.error = error
        for write in batch:
            write.loop.call_soon_threadsafe(_settle, write)


def _in_savepoint(conn: Connection, write: _Write) -> None:
    """Run one write of a batch; if it raises, undo its statements only."""
    driver = conn.connection.dbapi_connection
    assert driver is not None  # the connection is in a transaction
    cursor = driver.cursor()
    try:
        cursor.execute("SAVEPOINT portside_write")
        try:
            write.value = write.fn(conn)
        except Exception as error:
            write.error = error
            try:
                cursor.execute("ROLLBACK TO portside_write")
            except Exception:
                # SQLite ended the whole transaction with the error (a full disk does): the
                # batch fails, every write of it with this cause rather than a lost savepoint.
                raise error from None
        cursor.execute("RELEASE portside_write")
    finally:
        cursor.close()


def _settle(write: _Write) -> None:
    if write.future.done():  # its caller was cancelled
        return
    if write.error is not None:
        write.future.set_exception(write.error)
    else:
        write.future.set_result(write.value)
