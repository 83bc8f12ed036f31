"""Health checks, in distribution's shape: a map of each failing check's name to what is wrong,
empty when all is well.

    storage    a small probe object written, read back and deleted through the blob store
    database   a query of the metadata database
    disk       free space on the storage disk above a threshold (filesystem storage)
    drain      the drain file is absent (readiness only)

Storage and database probes take time and touch the backends, so a worker reuses its last result
for `cache_seconds`, and concurrent checks wait for one probe. The pull-through cache's upstreams
are reported (an upstream whose circuit is open), never failing: the registry serves what it
holds without them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from portside.metadata.base import RequestStore
from portside.registry import keys
from portside.storage.base import BlobStore

PROBE_BYTES = b"portside health probe\n"
# A repository name outside the grammar, so that the database probe finds nothing, cheaply.
NO_REPOSITORY = "-"


class UpstreamState(Protocol):
    @property
    def available(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """What to check, from the `health` settings."""

    free_space_path: Path | None = None  # the storage disk, with filesystem storage
    min_free_space: int = 0  # bytes; 0: not checked
    drain_file: Path | None = None
    cache_seconds: float = 5.0
    timeout_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Report:
    failures: dict[str, str]  # check name: what is wrong
    notes: dict[str, str]  # reported, never failing (upstreams)

    @property
    def healthy(self) -> bool:
        return not self.failures


class Health:
    def __init__(
        self,
        storage: BlobStore,
        metadata: RequestStore,
        policy: HealthPolicy,
        upstreams: Mapping[str, UpstreamState] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """upstreams: the pull-through cache's, by URL."""
        self._storage = storage
        self._metadata = metadata
        self._policy = policy
        self._upstreams = upstreams or {}
        self._clock = clock
        self._probed: tuple[float, dict[str, str]] | None = None
        self._probing: asyncio.Lock | None = None

    async def report(self) -> Report:
        """Every check: storage, database, disk, and the upstreams as notes (/debug/health)."""
        failures = dict(await self._probes())
        failures |= self._disk()
        notes = {
            f"upstream {url}": f"unavailable: {upstream.last_error}"
            for url, upstream in self._upstreams.items()
            if not upstream.available
        }
        return Report(failures, notes)

    async def readiness(self) -> Report:
        """Whether to take new requests (/readyz): storage and database work, not drained."""
        failures = dict(await self._probes())
        drain = self._policy.drain_file
        if drain is not None and os.path.lexists(drain):
            failures["drain"] = f"draining: {drain} exists"
        return Report(failures, {})

    async def _probes(self) -> dict[str, str]:
        if self._probing is None:
            self._probing = asyncio.Lock()  # made in the event loop that uses it
        async with self._probing:
            probed = self._probed
            if probed is not None and self._clock() - probed[0] < self._policy.cache_seconds:
                return probed[1]
            failures: dict[str, str] = {}
            for name, probe in (("storage", self._probe_storage), ("database", self._probe_db)):
                problem = await self._timed(probe)
                if problem is not None:
                    failures[name] = problem
            self._probed = (self._clock(), failures)
            return failures

    async def _timed(self, probe: Callable[[], Awaitable[None]]) -> str | None:
        seconds = self._policy.timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                await probe()
        except TimeoutError:
            return f"no answer within {seconds:g}s"
        except Exception as error:  # whatever broke is what the check reports
            return f"{type(error).__name__}: {error}"
        return None

    async def _probe_storage(self) -> None:
        key = keys.health_probe(uuid.uuid4().hex)
        await self._storage.put(key, PROBE_BYTES)
        try:
            if await self._storage.get(key) != PROBE_BYTES:
                raise OSError("the probe object read back differs from what was written")
        finally:
            await self._storage.delete(key)

    async def _probe_db(self) -> None:
        await self._metadata.repository_exists(NO_REPOSITORY)

    def _disk(self) -> dict[str, str]:
        path, minimum = self._policy.free_space_path, self._policy.min_free_space
        if path is None or not minimum:
            return {}
        try:
            free = shutil.disk_usage(path).free
        except OSError as error:
            return {"disk": f"cannot read the free space of {path}: {error.strerror or error}"}
        if free < minimum:
            return {"disk": f"{free:,} bytes free on {path}, below min_free_space {minimum:,}"}
        return {}
