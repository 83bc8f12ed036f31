"""What changes nothing (pulls, logins, refusals), gathered in memory and written a batch at a
time, so that it costs the request that makes it nothing measurable: a pull leaves a tuple, and
its event is made here, when written, as one outbox row per endpoint for up to its batch of
them. A process that dies loses what it has not written yet: at most FLUSH_SECONDS of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from portside.metadata.base import AuditEntry, Journal, JournalStore, Notice
from portside.registry.events import Pull, Renderer

log = logging.getLogger(__name__)

FLUSH_SECONDS: Final = 1.0
# A write is one transaction, whatever it holds: at a few thousand pulls a second, this many
# make it about once a second per process.
FLUSH_COUNT: Final = 1000
# Kept while the database refuses them; beyond this the oldest are dropped (and logged).
KEEP_MAX: Final = 20_000


class Buffer:
    """registry.events.Sink: run() writes what add() and add_pull() gather every FLUSH_SECONDS,
    or as soon as FLUSH_COUNT have come."""

    def __init__(
        self,
        store: JournalStore,
        renderer: Renderer,
        interval: float = FLUSH_SECONDS,
        count: int = FLUSH_COUNT,
    ) -> None:
        self._store = store
        self._renderer = renderer
        self._interval = interval
        self._count = count
        self._pulls: list[Pull] = []
        self._notices: list[Notice] = []
        self._audit: list[AuditEntry] = []
        self._full = asyncio.Event()

    def add_pull(self, pull: Pull) -> None:
        self._pulls.append(pull)
        if len(self._pulls) >= self._count:
            self._full.set()

    def add(self, journal: Journal) -> None:
        self._notices.extend(journal.notices)
        self._audit.extend(journal.audit)
        if len(self._notices) + len(self._audit) >= self._count:
            self._full.set()

    async def flush(self) -> None:
        pulls, notices, audit = self._pulls, self._notices, self._audit
        if not pulls and not notices and not audit:
            return
        self._pulls, self._notices, self._audit = [], [], []
        try:
            rendered = self._renderer.pull_notices(pulls)
            await self._store.record(Journal((*notices, *rendered), tuple(audit)))
        except Exception:
            log.exception(
                "could not write %d pulls, %d events and %d audit entries",
                len(pulls),
                len(notices),
                len(audit),
            )
            # Kept as pulls, not as events: those are made again, with new ids, when written.
            self._pulls[:0], self._notices[:0], self._audit[:0] = pulls, notices, audit
            self._drop_beyond(KEEP_MAX)

    def _drop_beyond(self, limit: int) -> None:
        excess = len(self._pulls) + len(self._notices) + len(self._audit) - limit
        if excess > 0:
            log.error("dropped %d buffered pulls, events and audit entries", excess)
            for kept in (self._pulls, self._notices, self._audit):
                dropped = min(excess, len(kept))
                del kept[:dropped]
                excess -= dropped

    async def run(self) -> None:
        """Flush until cancelled (then flush() once more, to lose nothing)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            await self.flush()
