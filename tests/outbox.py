"""A courier (server/notifications.py) in tests: an outbox in memory, and a run of the courier
against an endpoint app until the outbox is empty."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

import httpx

from portside.config.notifications import EndpointSettings
from portside.metadata.base import OutboxEvent
from portside.server.notifications import Courier


class Outbox:
    """A JournalStore's delivery half, in memory: one row per payload, for endpoint `ci`."""

    def __init__(self, payloads: list[str]) -> None:
        self.rows = [OutboxEvent(n, "ci", payload) for n, payload in enumerate(payloads, 1)]
        self.deleted: list[list[int]] = []
        self.reads = 0

    async def pending_events(self, endpoint: str, limit: int) -> list[OutboxEvent]:
        self.reads += 1
        return [row for row in self.rows if row.endpoint == endpoint][:limit]

    async def delete_events(self, ids: Collection[int]) -> None:
        self.deleted.append(list(ids))
        self.rows = [row for row in self.rows if row.id not in set(ids)]


async def run_courier(
    settings: EndpointSettings,
    outbox: Outbox,
    endpoint_app: Callable[[httpx.Request], httpx.Response],
) -> None:
    """A courier sending to endpoint_app until the outbox is empty (or 3 seconds have passed)."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(endpoint_app)) as client:
        courier = asyncio.create_task(Courier(settings, outbox, client).run())  # type: ignore[arg-type]
        for _ in range(300):
            if not outbox.rows:
                break
            await asyncio.sleep(0.01)
        courier.cancel()
