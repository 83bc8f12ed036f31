"""Delivery of the outbox to the notification endpoints, and pruning of the audit log, by one
process of the whole deployment at a time.

Every worker process of every instance asks for the lease "journal" every RENEW_SECONDS; the one
that holds it runs a Courier per endpoint, which POSTs the endpoint's events oldest first and
deletes them once the endpoint took them (any 2xx or 3xx, as distribution counts it). So an event
is sent at least once: twice only when a holder died (or stalled past the lease) between sending
and deleting, with the same `id` both times. A holder that dies (even SIGKILL) leaves its lease
to expire, LEASE_TTL later, and the events to whoever takes it next.

Order per endpoint is the order of the outbox's ids, which the metadata store writes last in
each change's transaction: of two changes to the same rows, the later one's events come later.
A row holds one event, or (pulls, written a batch at a time) up to PULLS_PER_ROW of them,
stored as registry.events.PULLS describes; a row is deleted once all of its events were taken.
A lower id committed after a higher one (two unrelated transactions on PostgreSQL) is not lost:
events leave the outbox one by one, not behind a cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx

from portside.config.notifications import EndpointSettings
from portside.config.settings import Settings
from portside.metadata.base import JournalStore, OutboxEvent
from portside.metrics import notifications as metrics
from portside.registry.event_buffer import Buffer
from portside.registry.events import (
    EVENTS_MEDIA_TYPE,
    EndpointRules,
    Recorder,
    Renderer,
    UnreadableRow,
    unpack,
)
from portside.registry.gc import default_holder

log = logging.getLogger(__name__)

LEASE: Final = "journal"
LEASE_TTL: Final = timedelta(seconds=10)
RENEW_SECONDS: Final = 3.0
# How often a courier that sent all there was looks for new events (another process may have
# written them).
POLL_SECONDS: Final = 0.5
READ_BATCH: Final = 100
# The longest wait between tries of an endpoint that keeps failing.
MAX_BACKOFF_SECONDS: Final = 300.0
# The first quick retries start this short and double up to `backoff`.
FIRST_RETRY_SECONDS: Final = 0.05
PRUNE_SECONDS: Final = 3600.0
PRUNE_BATCH: Final = 1000
SIGNATURE_HEADER: Final = "X-Portside-Signature"
# An envelope's body at most, whatever the batch (one larger event goes alone): under the 1 MiB
# that receivers behind nginx take by default (client_max_body_size).
ENVELOPE_BYTES: Final = 1_000_000
ENVELOPE_HEAD: Final = '{"events":['
ENVELOPE_TAIL: Final = "]}"
EMPTY_ENVELOPE_BYTES: Final = len(ENVELOPE_HEAD) + len(ENVELOPE_TAIL)


class DeliveryFailed(Exception):
    pass


def retry_delay(failures: int, threshold: int, backoff: float) -> float:
    """Seconds to wait after `failures` failed tries in a row: below `threshold`, from
    FIRST_RETRY_SECONDS doubling up to `backoff`; from `threshold` on, `backoff` doubling up to
    MAX_BACKOFF_SECONDS (or `backoff`, if longer)."""
    if failures < threshold:
        return min(backoff, FIRST_RETRY_SECONDS * 2.0 ** (failures - 1))
    return min(max(backoff, MAX_BACKOFF_SECONDS), backoff * 2.0 ** (failures - threshold))


def envelopes(events: Sequence[str], batch: int) -> Iterator[list[str]]:
    """events, in order, in envelopes of up to batch events and ENVELOPE_BYTES (at least one
    event each)."""
    envelope: list[str] = []
    size = EMPTY_ENVELOPE_BYTES
    for event in events:
        # Events are JSON made with ensure_ascii: a character is a byte; 1 for the comma.
        if envelope and (len(envelope) == batch or size + len(event) + 1 > ENVELOPE_BYTES):
            yield envelope
            envelope, size = [], EMPTY_ENVELOPE_BYTES
        envelope.append(event)
        size += len(event) + 1
    if envelope:
        yield envelope


def envelope(events: Sequence[str]) -> bytes:
    """distribution's envelope, `{"events": [...]}`, of events stored as JSON text."""
    # The joined events put between head and tail by a second join: one copy of the body
    # fewer than concatenating (an envelope is up to a megabyte; half the time it took).
    return ",".join(events).join((ENVELOPE_HEAD, ENVELOPE_TAIL)).encode()


def signature(secret: str, body: bytes) -> str:
    """The X-Portside-Signature value: HMAC-SHA256 of the body under the endpoint's secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Courier:
    """Sends one endpoint's events, oldest first, until cancelled."""

    def __init__(
        self, endpoint: EndpointSettings, store: JournalStore, client: httpx.AsyncClient
    ) -> None:
        self.endpoint = endpoint
        self._store = store
        self._client = client
        self._headers = [
            (name, value) for name, values in endpoint.headers.items() for value in values
        ]
        self._headers.append(("Content-Type", EVENTS_MEDIA_TYPE))
        self._pending = metrics.pending.labels(endpoint.name)

    async def run(self) -> None:
        while True:
            try:
                await self._deliver()
            except Exception:  # the database, most likely: the events wait there meanwhile
                log.exception(
                    "notifications: %s: delivery stopped; again in 1s", self.endpoint.name
                )
                await asyncio.sleep(1.0)

    async def _deliver(self) -> None:
        failures = 0
        endpoint = self.endpoint
        while True:
            rows = await self._store.pending_events(endpoint.name, READ_BATCH)
            events, ends = self._read(rows)
            self._pending.set(len(events))
            if not events:
                if rows:  # unreadable, every one: they would be read again for ever
                    await self._store.delete_events([row.id for row in rows])
                await asyncio.sleep(POLL_SECONDS)
                continue
            # What was sent is forgotten in one write per read, not one per request: only a
            # process that dies meanwhile sends it again (a row whose events were sent in part
            # too: it stays until all of them were taken).
            sent = 0
            # Caught up: more is left to gather before the next read, so that one read and one
            # delete serve many rows while events keep coming, not one row each.
            delay = 0.0 if len(rows) == READ_BATCH else POLL_SECONDS
            try:
                for batch in envelopes(events, endpoint.batch):
                    try:
                        await self.send(batch)
                    except DeliveryFailed as error:
                        failures += 1
                        delay = retry_delay(
                            failures, endpoint.threshold, endpoint.backoff.total_seconds()
                        )
                        log.warning(
                            "notifications: %s failed (%s), %d in a row; next try in %.1fs",
                            endpoint.name,
                            error,
                            failures,
                            delay,
                        )
                        break
                    failures = 0
                    sent += len(batch)
                    self._pending.dec(len(batch))
            finally:
                delivered = [row.id for row, end in zip(rows, ends, strict=True) if end <= sent]
                if delivered:
                    await asyncio.shield(self._store.delete_events(delivered))
            await asyncio.sleep(delay)

    def _read(self, rows: Sequence[OutboxEvent]) -> tuple[list[str], list[int]]:
        """The rows' events, and where each row's end in them. A row this version cannot read
        is logged whole, so nothing is lost, and counts as a row of no events: it is deleted
        with those before it, rather than stopping every later event for ever."""
        events: list[str] = []
        ends: list[int] = []
        for row in rows:
            try:
                events.extend(unpack(row.payload))
            except UnreadableRow as error:
                log.error(
                    "notifications: %s: outbox row %d dropped, unreadable (%s): %s",
                    self.endpoint.name,
                    row.id,
                    error,
                    row.payload,
                )
            ends.append(len(events))
        return events, ends

    async def send(self, events: Sequence[str]) -> None:
        body = envelope(events)
        headers = list(self._headers)
        if self.endpoint.secret is not None:
            headers.append((SIGNATURE_HEADER, signature(self.endpoint.secret, body)))
        to = self.endpoint.name
        metrics.events.labels("Events", to).inc(len(events))
        try:
            response = await self._client.post(
                self.endpoint.url,
                content=body,
                headers=headers,
                timeout=self.endpoint.timeout.total_seconds(),
            )
        except httpx.HTTPError as error:
            metrics.events.labels("Errors", to).inc(len(events))
            raise DeliveryFailed(f"{type(error).__name__}: {error}") from None
        metrics.status.labels(str(response.status_code), to).inc()
        if not 200 <= response.status_code < 400:
            metrics.events.labels("Failures", to).inc(len(events))
            raise DeliveryFailed(f"answered {response.status_code}")
        metrics.events.labels("Successes", to).inc(len(events))


class Dispatcher:
    """Holds the lease while it can; while it does, runs the couriers and prunes the audit log."""

    def __init__(
        self,
        store: JournalStore,
        endpoints: Sequence[EndpointSettings],
        audit_retention: timedelta | None,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._endpoints = endpoints
        self._retention = audit_retention
        self.holder = holder or default_holder()

    async def run(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            couriers: list[asyncio.Task[None]] = []
            try:
                while True:
                    held = await self._renew()
                    if held and not couriers:
                        log.info("notifications: %s delivers events", self.holder)
                        couriers = [self._start(e, client) for e in self._endpoints]
                        if self._retention is not None:
                            couriers.append(asyncio.create_task(self._prune(self._retention)))
                    elif not held and couriers:
                        await _cancel(couriers)
                        couriers = []
                    await asyncio.sleep(RENEW_SECONDS)
            finally:
                await _cancel(couriers)
                if couriers:
                    with contextlib.suppress(Exception):
                        await self._store.release_lease(LEASE, self.holder)

    def _start(self, endpoint: EndpointSettings, client: httpx.AsyncClient) -> asyncio.Task[None]:
        return asyncio.create_task(Courier(endpoint, self._store, client).run())

    async def _renew(self) -> bool:
        try:
            lease = await self._store.acquire_lease(LEASE, self.holder, LEASE_TTL)
        except Exception:
            log.exception("notifications: could not renew the lease %r", LEASE)
            return False
        return lease.holder == self.holder

    async def _prune(self, retention: timedelta) -> None:
        while True:
            before = datetime.now(UTC) - retention
            while await self._store.prune_audit(before, PRUNE_BATCH) == PRUNE_BATCH:
                pass
            await asyncio.sleep(PRUNE_SECONDS)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def recorder(settings: Settings, store: JournalStore) -> tuple[Recorder, Buffer | None]:
    """What records events and audit entries for these settings, and the buffer of those that
    change nothing (None when nothing is recorded)."""
    rules, audit, references, source = _recording(settings)
    if not rules and not audit:
        return Recorder(), None
    # The buffer makes the events of pulls as the recorder makes those of changes.
    buffer = Buffer(store, Renderer(rules, include_references=references, source=source))
    events = Recorder(rules, audit=audit, include_references=references, source=source, sink=buffer)
    return events, buffer


def change_recorder(settings: Settings) -> Recorder:
    """What records the events and audit entries of changes made outside a server (a CLI
    command, the collector): written with each change, delivered by the servers' couriers."""
    rules, audit, references, source = _recording(settings)
    return Recorder(rules, audit=audit, include_references=references, source=source)


def _recording(
    settings: Settings,
) -> tuple[list[EndpointRules], bool, bool, dict[str, str]]:
    """The endpoints' rules, whether the audit log is on, whether events list references, and
    the events' source, for these settings."""
    notifications = settings.notifications
    endpoints = notifications.enabled if notifications is not None else ()
    rules = [
        EndpointRules(e.name, e.ignored_media_types, frozenset(e.ignore.actions)) for e in endpoints
    ]
    audit = settings.audit is not None and settings.audit.enabled
    references = notifications is not None and notifications.events.includereferences
    source = {"addr": f"{socket.gethostname()}:{settings.port}", "instanceID": str(uuid.uuid4())}
    return rules, audit, references, source


@contextlib.asynccontextmanager
async def background_notifications(
    settings: Settings, store: JournalStore, buffer: Buffer | None
) -> AsyncIterator[None]:
    """While the block runs: write the buffer every second, and take part in delivery and
    pruning (under the lease); at its end, write what the buffer holds."""
    if buffer is None:
        yield
        return
    notifications, audit = settings.notifications, settings.audit
    endpoints = notifications.enabled if notifications is not None else ()
    retention = audit.retention if audit is not None and audit.enabled else None
    dispatcher = Dispatcher(store, endpoints, retention)
    tasks = [asyncio.create_task(buffer.run()), asyncio.create_task(dispatcher.run())]
    try:
        yield
    finally:
        await _cancel(tasks)
        await buffer.flush()
