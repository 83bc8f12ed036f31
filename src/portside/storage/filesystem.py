"""Blobs as files under one root folder. New objects are written to a temporary file, fsynced and
renamed into place, then the folder is fsynced: a crash leaves the old object or the new one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from anyio import to_thread

from portside.storage.base import NotFound, ObjectInfo, check_key

T = TypeVar("T")

READ_CHUNK = 1024 * 1024
THREAD_WRITE_BYTES = 1024 * 1024
# Temporary files start with a dot, which no key may, so they never collide with an object.
TEMP_PREFIX = ".tmp-"
# How often to remake a folder that a concurrent delete keeps pruning before giving up.
FOLDER_RETRIES = 10


def make_parent(path: Path) -> None:
    """Make path's folder where it is missing. A delete elsewhere may prune it meanwhile
    (pathlib then raises FileExistsError, having found it there and then gone): callers retry
    what they do in it, up to FOLDER_RETRIES times."""
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        path.parent.mkdir(parents=True, exist_ok=True)


def _check_offset(offset: int) -> None:
    if offset < 0:
        raise ValueError(f"negative offset: {offset}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemWriter:
    """Appends with os.write on an unbuffered descriptor: one copy. Small writes run in the event
    loop, since they cost less than a hop to a thread; large ones in a thread, so that the loop
    goes on receiving while the page cache fills."""

    def __init__(self, path: Path, fd: int, size: int, new: bool) -> None:
        self._path = path
        self._fd = fd
        self._size = size
        self._new = new  # written from the start: its name may not be durable yet

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        if len(data) >= THREAD_WRITE_BYTES:
            await to_thread.run_sync(self._write_all, data)
        else:
            self._write_all(data)
        self._size += len(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def commit(self) -> None:
        await to_thread.run_sync(self._sync)
        await self.close()

    def _sync(self) -> None:
        os.fdatasync(self._fd)
        if self._new:
            _fsync_dir(self._path.parent)

    async def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    async def cancel(self) -> None:
        await self.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class FilesystemBlobStore:
    """Keys map to paths under root, one file per object."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _in_folder(self, path: Path, create: Callable[[], T]) -> T:
        """create() once path's folder exists. Another worker's delete may prune the folder
        between the two steps, so make it again while create() finds it gone."""
        attempts = FOLDER_RETRIES
        while True:
            make_parent(path)
            try:
                return create()
            except FileNotFoundError:
                attempts -= 1
                if attempts == 0:
                    raise

    async def stat(self, key: str) -> int:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(key)
        return info.st_size

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        _check_offset(offset)
        try:
            file = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None
        with file:
            file.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = file.read(want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None

    async def put(self, key: str, data: bytes) -> None:
        # In a thread: its fsyncs would hold the event loop still until the disk answers.
        await to_thread.run_sync(self._put, self._path(key), data)

    def _put(self, path: Path, data: bytes) -> None:
        temp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with self._in_folder(temp, lambda: temp.open("wb")) as file:
                file.write(data)
                file.flush()
                os.fdatasync(file.fileno())
            temp.rename(path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    async def writer(self, key: str, offset: int = 0) -> FilesystemWriter:
        path = self._path(key)
        _check_offset(offset)
        if offset == 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            fd = self._in_folder(path, lambda: os.open(path, flags, 0o640))
            return FilesystemWriter(path, fd, 0, new=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(key) from None
        if os.fstat(fd).st_size < offset:
            os.close(fd)
            raise NotFound(f"{key} is shorter than {offset}")
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        return FilesystemWriter(path, fd, offset, new=False)

    async def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)

        def rename() -> None:
            try:
                source.rename(target)
            except (FileNotFoundError, NotADirectoryError):
                if source.is_file():
                    raise  # the target's folder, pruned meanwhile: _in_folder makes it again
                self._prune(target.parent)
                raise NotFound(src) from None

        self._in_folder(target, rename)
        await to_thread.run_sync(_fsync_dir, target.parent)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except IsADirectoryError:
            await to_thread.run_sync(shutil.rmtree, path, True)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as error:  # pragma: no cover - platforms that report EPERM for folders
            if error.errno != errno.EPERM:
                raise
            await to_thread.run_sync(shutil.rmtree, path, True)
        self._prune(path.parent)

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty, up to the root, so deleted blobs leave no litter."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    async def list(self, prefix: str) -> AsyncIterator[str]:
        base = self._path(prefix)
        if base.is_file():
            yield prefix
            return
        for folder, _, files in os.walk(base):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    yield str((Path(folder) / name).relative_to(self.root))

    async def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for key in self.list(prefix):
            try:
                info = self._path(key).stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            yield ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def redirect_url(self, key: str, expires: int) -> None:
        """None: the server sends the file itself, which is already zero-copy."""
        check_key(key)
