"""A consistent copy of a live SQLite database, through SQLite's online backup: in WAL mode the
copy reads one snapshot while the registry's writers go on."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path


class NoDatabase(Exception):
    """There is no SQLite database at the path given."""


def copy_database(source: Path, target: Path) -> None:
    """Copy the database at source to target, durably: written beside target under a temporary
    name, fsynced, then renamed over it. NoDatabase if source is not there."""
    if not source.is_file():
        raise NoDatabase(str(source))
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    # mode=rw: a missing file is an error, not a new empty database.
    reader = sqlite3.connect(f"file:{source}?mode=rw", uri=True)
    try:
        writer = sqlite3.connect(temp)
        try:
            # All pages in one step, in one read transaction: one snapshot. (In steps, a write
            # between them would restart the copy.)
            reader.backup(writer)
        finally:
            writer.close()
        with temp.open("rb") as file:
            os.fsync(file.fileno())
        temp.rename(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        reader.close()
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
