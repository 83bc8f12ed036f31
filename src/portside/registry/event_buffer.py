"""Journals of no change (pulls, logins, refusals), gathered in memory and written a batch at a
time, so that they cost the request that makes them nothing measurable. A process that dies
loses what it has not written yet: at most FLUSH_SECONDS of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from portside.metadata.base import AuditEntry, Journal, JournalStore, Notice

log = logging.getLogger(__name__)

FLUSH_SECONDS: Final = 1.0
FLUSH_COUNT: Final = 200
# Kept while the database refuses them; beyond this the oldest are dropped (and logged).
KEEP_MAX: Final = 20_000


class Buffer:
    """registry.events.Sink: run() writes what add() gathers every FLUSH_SECONDS, or as soon
    as FLUSH_COUNT have come."""

    def __init__(
        self,
        store: JournalStore,
        interval: float = FLUSH_SECONDS,
        count: int = FLUSH_COUNT,
    ) -> None:
        self._store = store
        self._interval = interval
        self._count = count
        self._notices: list[Notice] = []
        self._audit: list[AuditEntry] = []
        self._full = asyncio.Event()

    def add(self, journal: Journal) -> None:
        self._notices.extend(journal.notices)
        self._audit.extend(journal.audit)
        if len(self._notices) + len(self._audit) >= self._count:
            self._full.set()

    async def flush(self) -> None:
        notices, audit = self._notices, self._audit
        if not notices and not audit:
            return
        self._notices, self._audit = [], []
        try:
            await self._store.record(Journal(tuple(notices), tuple(audit)))
        except Exception:
            log.exception(
                "could not write %d events and %d audit entries", len(notices), len(audit)
            )
            self._notices[:0], self._audit[:0] = notices, audit
            self._drop_beyond(KEEP_MAX)

    def _drop_beyond(self, limit: int) -> None:
        excess = len(self._notices) + len(self._audit) - limit
        if excess > 0:
            log.error("dropped %d buffered events and audit entries", excess)
            from_notices = min(excess, len(self._notices))
            del self._notices[:from_notices]
            del self._audit[: excess - from_notices]

    async def run(self) -> None:
        """Flush until cancelled (then flush() once more, to lose nothing)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            await self.flush()
