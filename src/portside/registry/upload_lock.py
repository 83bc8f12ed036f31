"""One writer per upload at a time, so that chunks are written straight onto the upload's bytes.

A request that writes an upload's bytes holds its lock from before it reads the offset until
after it has recorded the new one; a second request on the same upload does not wait but is
refused at once (416, as a chunk out of order is). Where the blob store keeps
objects as local files, the lock is an flock on the upload's own file, which the kernel lets go
when its process dies; elsewhere (S3, shared by instances) it is a lease in the metadata store,
with a short time to live that the holder renews while bytes flow, and checks before it makes
its bytes durable, so a holder that stalled past the lease never overwrites a successor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Final, Protocol

from portside.metadata.base import LeaseStore
from portside.registry import keys
from portside.registry.errors import UploadOutOfOrder
from portside.storage.base import BlobStore
from portside.storage.filesystem import make_parent

LEASE_TTL: Final = timedelta(seconds=30)
# How often to make the lock file again when a closing request moved or removed it meanwhile.
ATTEMPTS: Final = 10


def _busy() -> UploadOutOfOrder:
    return UploadOutOfOrder({"reason": "a concurrent request is writing to the upload"})


class Held(Protocol):
    async def renew(self) -> None:
        """Keep the lock while bytes flow (cheap: call it often); UploadOutOfOrder if lost."""

    async def confirm(self) -> None:
        """That the lock is still this request's, for longer than it takes to make the bytes
        written durable and record them; UploadOutOfOrder if it was lost."""


class UploadLocks:
    def __init__(self, storage: BlobStore, leases: LeaseStore) -> None:
        self._storage = storage
        self._leases = leases

    def hold(self, upload_id: str) -> AbstractAsyncContextManager[Held]:
        """The upload's lock, for the block; UploadOutOfOrder if another request has it."""
        path = self._storage.local_path(keys.upload(upload_id))
        if path is not None:
            return _flocked(path)
        return _leased(self._leases, f"upload:{upload_id}")


class _Flock:
    async def renew(self) -> None:
        pass

    async def confirm(self) -> None:
        pass


@asynccontextmanager
async def _flocked(path: Path) -> AsyncIterator[Held]:
    fd = _lock(path)
    try:
        yield _Flock()
    finally:
        _unlock(path, fd)


def _lock(path: Path) -> int:
    """An flock on the file at path, made empty if there is none. The file a descriptor locks
    may have been moved (the closing request makes it the blob) or removed (see _unlock) before
    the lock was taken: then the lock guards nothing, and is taken again on the file now there."""
    for _ in range(ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except FileNotFoundError:  # the folder, pruned by a delete
            make_parent(path)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy() from None
        if _is_at(fd, path):
            return fd
        os.close(fd)
    raise _busy()


def _unlock(path: Path, fd: int) -> None:
    """Let go; an upload's file that is still empty holds no bytes, as no file does, so it is
    removed rather than left behind by a request that wrote nothing (or found no upload)."""
    try:
        if os.fstat(fd).st_size == 0 and _is_at(fd, path):
            path.unlink()
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


class _Lease:
    def __init__(self, leases: LeaseStore, name: str) -> None:
        self._leases = leases
        self._name = name
        self._holder = uuid.uuid4().hex
        self._renewed = 0.0

    async def confirm(self) -> None:
        renewed = time.monotonic()
        lease = await self._leases.acquire_lease(self._name, self._holder, LEASE_TTL)
        if lease.holder != self._holder:
            raise _busy()
        self._renewed = renewed

    async def renew(self) -> None:
        if time.monotonic() - self._renewed > LEASE_TTL.total_seconds() / 3:
            await self.confirm()

    async def release(self) -> None:
        await self._leases.release_lease(self._name, self._holder)


@asynccontextmanager
async def _leased(leases: LeaseStore, name: str) -> AsyncIterator[Held]:
    lease = _Lease(leases, name)
    await lease.confirm()
    try:
        yield lease
    finally:
        # A lease not let go ends by itself within LEASE_TTL: no reason to fail the request.
        with contextlib.suppress(Exception):
            await asyncio.shield(lease.release())
