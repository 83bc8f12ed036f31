"""When each tag was last pulled, for retention's `keep_pulled_within`: noted in memory on the
pull path (a dict assignment), written a batch a second, and each tag at most once per
RESOLUTION per process, so a tag pulled a thousand times a minute costs one row write. A
process that dies loses at most the last second's times."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from portside.metadata.base import PolicyStore, TagPull

log = logging.getLogger(__name__)

FLUSH_SECONDS: Final = 1.0
# Retention keeps what was pulled within days: a minute's precision is plenty.
RESOLUTION: Final = timedelta(minutes=1)
# Tags whose last write this process remembers; beyond it, forgotten (written again next pull).
REMEMBERED_MAX: Final = 100_000


class PullTimes:
    def __init__(
        self, store: PolicyStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self._clock = clock
        self._pending: dict[tuple[str, str], datetime] = {}
        self._written: dict[tuple[str, str], datetime] = {}

    def note(self, repository: str, tag: str) -> None:
        """A pull of the repository by this tag, now."""
        key = (repository, tag)
        now = self._clock()
        written = self._written.get(key)
        if written is None or now - written >= RESOLUTION:
            self._pending[key] = now

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        pulls = [TagPull(repository, tag, at) for (repository, tag), at in pending.items()]
        try:
            await self._store.record_pulls(pulls)
        except Exception:
            log.exception("could not record when %d tags were pulled", len(pulls))
            return
        if len(self._written) + len(pending) > REMEMBERED_MAX:
            self._written.clear()
        self._written.update(pending)

    async def run(self, interval: float = FLUSH_SECONDS) -> None:
        """Flush every interval until cancelled, then once more."""
        try:
            while True:
                started = time.monotonic()
                await self.flush()
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())
