"""The SQLite writer thread: writes waiting together commit together, each one's failure its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, event, select

from portside.metadata.engine import Database

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("text", String))


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'writes.db'}")
    metadata.create_all(database.engine)
    yield database
    await database.close()


def add(text: str, fail: bool = False) -> Callable[[Connection], str]:
    def run(conn: Connection) -> str:
        conn.execute(notes.insert().values(text=text))
        if fail:
            raise ValueError(text)
        return text

    return run


def stored(database: Database) -> list[str]:
    with database.engine.connect() as conn:
        return sorted(conn.scalars(select(notes.c.text)))


def count_commits(database: Database) -> list[int]:
    commits: list[int] = []
    event.listen(database.engine, "commit", lambda conn: commits.append(1))
    return commits


async def test_writes_waiting_together_are_committed_together(database: Database) -> None:
    commits = count_commits(database)
    results = await asyncio.gather(*(database._write(add(f"n{i}")) for i in range(50)))
    assert results == [f"n{i}" for i in range(50)]
    assert len(stored(database)) == 50
    assert len(commits) < 50  # the first write commits alone, the rest in a few batches


async def test_a_write_that_fails_undoes_only_its_own_statements(database: Database) -> None:
    outcomes = await asyncio.gather(
        *(database._write(add(f"n{i}", fail=i % 3 == 0)) for i in range(30)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, ValueError)]
    assert [str(o) for o in failed] == [f"n{i}" for i in range(0, 30, 3)]
    assert stored(database) == sorted(f"n{i}" for i in range(30) if i % 3)


async def test_a_lone_write_that_fails_leaves_nothing(database: Database) -> None:
    with pytest.raises(ValueError, match="alone"):
        await database._write(add("alone", fail=True))
    assert stored(database) == []


async def test_a_failed_commit_reaches_every_write_of_the_batch(database: Database) -> None:
    def fail_commit(conn: Connection) -> None:
        raise OSError("disk gone")

    event.listen(database.engine, "commit", fail_commit)
    outcomes = await asyncio.gather(
        *(database._write(add(f"n{i}")) for i in range(10)), return_exceptions=True
    )
    assert all(isinstance(o, OSError) for o in outcomes)
    event.remove(database.engine, "commit", fail_commit)
    assert stored(database) == []


async def test_a_write_whose_error_ended_the_transaction_fails_the_batch_with_its_cause(
    database: Database,
) -> None:
    def ends_everything(conn: Connection) -> str:
        # What SQLite does on a full disk: the error, and the transaction rolled back with it.
        driver = conn.connection.dbapi_connection
        assert driver is not None
        driver.execute("ROLLBACK")
        raise OSError("disk full")

    writes = [add("n0"), ends_everything, add("n2")]
    blocker = Database(str(database.engine.url))
    assert blocker._writer_lock is not None
    with blocker._writer_lock.held():  # so that the writes wait, and go together
        pending = [asyncio.ensure_future(database._write(fn)) for fn in writes]
        await asyncio.sleep(0.05)
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    await blocker.close()
    # Each write either committed, or failed with the cause (never with a lost savepoint):
    # the ones batched with the failing write are not stored, the others are.
    assert isinstance(outcomes[1], OSError)
    committed = [o for o in outcomes if isinstance(o, str)]
    assert all(isinstance(o, str) or str(o) == "disk full" for o in outcomes)
    assert stored(database) == sorted(committed)


async def test_a_cancelled_caller_leaves_the_writer_serving_the_others(
    database: Database,
) -> None:
    first = asyncio.ensure_future(database._write(add("cancelled")))
    await asyncio.sleep(0)
    first.cancel()
    assert await database._write(add("after")) == "after"
    assert "after" in stored(database)


async def test_the_event_loop_goes_on_while_a_write_waits_for_the_lock(
    database: Database,
) -> None:
    # Another process holding SQLite's writer lock: this loop must still run other work.
    blocker = Database(str(database.engine.url))
    held = blocker._writer_lock
    assert held is not None
    ticks = 0
    with held.held():
        write = asyncio.ensure_future(database._write(add("late")))
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done()
    assert await write == "late"
    assert ticks == 5
    await blocker.close()
