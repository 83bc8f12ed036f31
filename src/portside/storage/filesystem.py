"""Blobs as files under one root folder. New objects are written to a temporary file, fsynced and
renamed into place, then the folder is fsynced: a crash leaves the old object or the new one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from anyio import to_thread

from portside.storage.base import NotFound, check_key

READ_CHUNK = 1024 * 1024
# Temporary files start with a dot, which no key may, so they never collide with an object.
TEMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemWriter:
    """Appends with os.write on an unbuffered descriptor: one copy, in the event loop, since
    page-cache writes cost less than a hop to a thread."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self._path = path
        self._fd = fd
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    async def commit(self) -> None:
        await to_thread.run_sync(os.fdatasync, self._fd)
        await self.close()

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

    async def stat(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            file = self._path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError):
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
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with temp.open("wb") as file:
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
        if offset == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            return FilesystemWriter(path, fd, 0)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None
        if os.fstat(fd).st_size < offset:
            os.close(fd)
            raise NotFound(f"{key} is shorter than {offset}")
        os.ftruncate(fd, offset)
        os.lseek(fd, offset, os.SEEK_SET)
        return FilesystemWriter(path, fd, offset)

    async def move(self, src: str, dst: str) -> None:
        source, target = self._path(src), self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            source.rename(target)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(src) from None
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

    def local_path(self, key: str) -> Path:
        return self._path(key)
