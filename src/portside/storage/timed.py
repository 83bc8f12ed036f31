"""A BlobStore that times every call of the store it wraps into
`registry_storage_action_seconds{driver,action}`, as distribution's base.Base does for every
driver, so that no driver times itself.

Streams (read, list, scan) are timed to their first item, which is when the backend answered:
what follows is paced by whoever consumes them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

from portside.metrics import storage as metrics
from portside.metrics.instruments import HistogramChild
from portside.storage.base import BlobStore, ObjectInfo, Writer

T = TypeVar("T")

ACTIONS = ("stat", "read", "get", "put", "writer", "move", "delete", "list", "scan")


class TimedBlobStore:
    """BlobStore: `store`'s calls, timed under the driver name `driver` (local, s3)."""

    def __init__(self, store: BlobStore, driver: str) -> None:
        self.store = store
        self._timers: dict[str, HistogramChild] = {
            action: metrics.action_seconds.labels(driver, action) for action in ACTIONS
        }

    async def stat(self, key: str) -> int:
        started = time.perf_counter()
        try:
            return await self.store.stat(key)
        finally:
            self._timers["stat"].observe(time.perf_counter() - started)

    async def read(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        async for chunk in self._first_timed("read", self.store.read(key, offset, length)):
            yield chunk

    async def get(self, key: str) -> bytes:
        started = time.perf_counter()
        try:
            return await self.store.get(key)
        finally:
            self._timers["get"].observe(time.perf_counter() - started)

    async def put(self, key: str, data: bytes) -> None:
        started = time.perf_counter()
        try:
            await self.store.put(key, data)
        finally:
            self._timers["put"].observe(time.perf_counter() - started)

    async def writer(self, key: str, offset: int = 0) -> Writer:
        started = time.perf_counter()
        try:
            return await self.store.writer(key, offset)
        finally:
            self._timers["writer"].observe(time.perf_counter() - started)

    async def move(self, src: str, dst: str) -> None:
        started = time.perf_counter()
        try:
            await self.store.move(src, dst)
        finally:
            self._timers["move"].observe(time.perf_counter() - started)

    async def delete(self, key: str) -> None:
        started = time.perf_counter()
        try:
            await self.store.delete(key)
        finally:
            self._timers["delete"].observe(time.perf_counter() - started)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        async for key in self._first_timed("list", self.store.list(prefix)):
            yield key

    async def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in self._first_timed("scan", self.store.scan(prefix)):
            yield info

    def local_path(self, key: str) -> Path | None:
        return self.store.local_path(key)

    def redirect_url(self, key: str, expires: int) -> str | None:
        return self.store.redirect_url(key, expires)

    async def _first_timed(self, action: str, items: AsyncIterator[T]) -> AsyncIterator[T]:
        started = time.perf_counter()
        timed = False
        try:
            async for item in items:
                if not timed:
                    self._timers[action].observe(time.perf_counter() - started)
                    timed = True
                yield item
        finally:
            if not timed:  # empty, or it failed before its first item
                self._timers[action].observe(time.perf_counter() - started)
            # A reader that stops early closes this generator: close the driver's at once too
            # (it holds a file or a connection), not when the garbage collector finds it.
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
