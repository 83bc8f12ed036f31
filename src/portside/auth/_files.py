"""Small files the auth layer owns (htpasswd, signing keys): atomic replace,
atomic create-if-absent, and an advisory lock for read-modify-write cycles."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """A fsynced temporary file beside `path` holding `data`, with `mode` and, when `path`
    exists, its owner (so `portside user add` run as root keeps the service's file readable)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, st.st_uid, st.st_gid)
        with os.fdopen(fd, "wb", closefd=False) as file:
            file.write(data)
            file.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`: readers see the old file or the new one, never a part."""
    temp = _write_temp(path, data, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int) -> bool:
    """Create `path` holding `data` unless it exists; True if this call created it.

    The file appears whole (a hard link of a complete temporary file), so two processes racing
    to create it agree on one content: the loser gets False and should read the winner's."""
    temp = _write_temp(path, data, mode)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `<path>.lock` (created with mode 0600) for a
    read-modify-write of `path`. The lock file is left in place: removing it would race."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
