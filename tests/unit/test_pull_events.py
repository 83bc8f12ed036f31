"""Pull events made when the buffer is written, not in the request: the same JSON as a change's
event, one outbox row per endpoint for up to its batch of them, ids unique across processes;
the courier sends such rows in envelopes of the endpoint's batch; a failed write keeps the pulls."""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import time
import uuid
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from outbox import Outbox, run_courier
from portside.api import origins
from portside.api.urls import PublicAddress
from portside.config.notifications import NotificationsSettings
from portside.metadata.base import Journal
from portside.registry import event_ids
from portside.registry.event_buffer import Buffer
from portside.registry.events import (
    BLOB_MEDIA_TYPE,
    EVENT_SEPARATOR,
    PACKED,
    PULLS,
    Action,
    EndpointRules,
    Origin,
    Pull,
    Recorder,
    Renderer,
    Target,
    unpack,
)
from portside.server import notifications
from portside.server.notifications import Courier

IMAGE = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "b" * 64
MANIFEST = Target("team/app", DIGEST, IMAGE, 529, "v1")
BLOB = Target("team/app", DIGEST, BLOB_MEDIA_TYPE, 3, blob=True)
# A pull's origin: shared by a client's pulls alike, without a request id of its own.
CLIENT = Origin(
    actor="alice",
    address="192.0.2.7",
    host="registry.example.com",
    method="GET",
    user_agent='docker/24 "quoted"',
    base_url="https://registry.example.com",
    request_id=None,
)
SOURCE = {"addr": "node-1:5000", "instanceID": "i-1"}


def events_of(payload: str) -> list[dict[str, Any]]:
    return [json.loads(event) for event in unpack(payload)]


def test_a_pulls_event_is_written_as_a_changes_event_is() -> None:
    renderer = Renderer([EndpointRules("ci")], source=SOURCE)
    at = 1_764_000_000_123_456_789
    (pulled,) = renderer.pull_notices([(MANIFEST, CLIENT, at)])
    (changed,) = renderer.notices(Action.PULL, MANIFEST, CLIENT)

    (event,) = events_of(pulled.payload)
    expected = json.loads(changed.payload)
    for differing in ("id", "timestamp"):
        del event[differing], expected[differing]
    del event["request"]["id"], expected["request"]["id"]
    assert list(event.items()) == list(expected.items())  # keys in the same order too
    (text,) = unpack(pulled.payload)
    assert text == json.dumps(json.loads(text), separators=(",", ":"))
    assert json.loads(text)["timestamp"] == "2025-11-24T16:00:00.123456Z"
    uuid.UUID(json.loads(text)["id"])


def test_timestamps_read_as_distributions_at_any_time() -> None:
    renderer = Renderer([EndpointRules("ci")])
    for at in (0, 1_000, 1_764_000_000_000_000_000, 1_764_000_001_000_001_000, time.time_ns()):
        (notice,) = renderer.pull_notices([(BLOB, CLIENT, at)])
        micro = datetime.fromtimestamp(at // 1000 / 1e6, UTC)
        expected = micro.isoformat().replace("+00:00", "Z")
        assert events_of(notice.payload)[0]["timestamp"] == expected


def test_pulls_are_one_row_per_endpoint_for_up_to_a_hundred_in_order() -> None:
    renderer = Renderer(
        [
            EndpointRules("all"),
            EndpointRules("no-blobs", ignored_media_types=frozenset({BLOB_MEDIA_TYPE})),
        ]
    )
    pulls: list[Pull] = [(MANIFEST if n % 50 else BLOB, CLIENT, n) for n in range(250)]

    notices = renderer.pull_notices(pulls)

    rows = {
        name: [n.payload for n in notices if n.endpoint == name] for name in ("all", "no-blobs")
    }
    assert [len(events_of(row)) for row in rows["all"]] == [100, 100, 50]
    assert [len(events_of(row)) for row in rows["no-blobs"]] == [100, 100, 45]
    sent = [event for row in rows["all"] for event in events_of(row)]
    assert [event["timestamp"] for event in sent] == [
        datetime.fromtimestamp(0, UTC).isoformat().replace("+00:00", "Z")
    ] + [
        datetime.fromtimestamp(n / 1e9 // 1e-6 * 1e-6, UTC).isoformat().replace("+00:00", "Z")
        for n in range(1, 250)
    ]
    assert len({event["id"] for event in sent}) == 250
    assert len({event["request"]["id"] for event in sent}) == 250  # a request of its own each
    assert all(event["request"]["useragent"] == 'docker/24 "quoted"' for event in sent)


def test_rows_of_pulls_are_small_and_rows_written_before_still_read() -> None:
    renderer = Renderer([EndpointRules("ci")], source=SOURCE)
    (row,) = renderer.pull_notices([(MANIFEST, CLIENT, n * 1000) for n in range(100)])
    events = unpack(row.payload)
    assert len(events) == 100
    assert len(row.payload) * 20 < sum(map(len, events))
    # Rows written by earlier versions: plain events parted by a newline, and those packed
    # with zlib, read as they were.
    assert unpack(EVENT_SEPARATOR.join(events[:3])) == events[:3]
    zipped = zlib.compress(EVENT_SEPARATOR.join(events).encode(), 1)
    assert unpack(PACKED + base64.b64encode(zipped).decode()) == events


def test_a_pulls_event_has_one_id_at_every_endpoint_and_its_own_request_id_if_any() -> None:
    renderer = Renderer([EndpointRules("a"), EndpointRules("b")])
    request = replace(CLIENT, request_id="req-1")
    notices = renderer.pull_notices([(MANIFEST, CLIENT, 0), (MANIFEST, request, 1)])
    by_endpoint = {notice.endpoint: events_of(notice.payload) for notice in notices}
    assert [e["id"] for e in by_endpoint["a"]] == [e["id"] for e in by_endpoint["b"]]
    first, second = by_endpoint["a"]
    assert first["id"] != second["id"]
    assert second["request"]["id"] == "req-1"
    assert first["request"]["id"] not in (first["id"], second["id"], "req-1")


def test_a_batchs_ids_are_its_block_of_the_counter_written_as_compose_writes_them() -> None:
    renderer = Renderer([EndpointRules("ci")])
    (notice,) = renderer.pull_notices([(MANIFEST, CLIENT, n) for n in range(3)])
    prefix, first = json.loads(notice.payload[len(PULLS) :])[:2]
    ids = [[e["id"], e["request"]["id"]] for e in events_of(notice.payload)]
    expected = [event_ids.compose(prefix, first + n) for n in range(6)]
    assert ids == [expected[0:2], expected[2:4], expected[4:6]]


def test_templates_are_kept_by_identity_yet_an_equal_target_gets_its_own_event() -> None:
    renderer = Renderer([EndpointRules("ci")])
    other = replace(MANIFEST, repository="team/other")
    pulls: list[Pull] = [(MANIFEST, CLIENT, 0), (other, CLIENT, 1), (replace(MANIFEST), CLIENT, 2)]
    (notice,) = renderer.pull_notices(pulls)
    events = events_of(notice.payload)
    assert [e["target"]["repository"] for e in events] == ["team/app", "team/other", "team/app"]
    recorder = Recorder([EndpointRules("ci")])
    made = recorder.target(("team/app", DIGEST), lambda: replace(MANIFEST))
    assert recorder.target(("team/app", DIGEST), lambda: other) is made


def test_a_pull_with_references_is_written_with_them() -> None:
    layer = {"mediaType": "application/octet-stream", "size": 3, "digest": DIGEST}
    target = Target("team/app", DIGEST, IMAGE, 529, "v1", references=(layer,))
    renderer = Renderer([EndpointRules("ci")], include_references=True)

    (notice,) = renderer.pull_notices([(target, CLIENT, 0), (target, CLIENT, 1)])

    assert [event["target"]["references"] for event in events_of(notice.payload)] == [[layer]] * 2


def _child_id(ids: Any) -> None:
    ids.put(event_ids.next_id())


def test_ids_are_uuid_shaped_and_unique_in_forked_processes_too() -> None:
    made = [event_ids.next_id() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(str(uuid.UUID(one)) == one for one in made)
    fork = multiprocessing.get_context("fork")
    ids = fork.Queue()
    children = [fork.Process(target=_child_id, args=(ids,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    theirs = {ids.get(timeout=10) for _ in children}
    assert len(theirs) == 2
    assert not {one[:24] for one in theirs} & {made[0][:24]}


def outbox_of(rows: list[list[str]]) -> Outbox:
    """An outbox of rows of several events (as pulls are written)."""
    return Outbox([EVENT_SEPARATOR.join(events) for events in rows])


async def deliver(outbox: Outbox, answers: list[int], batch: int) -> list[list[str]]:
    """What the endpoint took, envelope by envelope, answering `answers` then 200."""
    taken: list[list[str]] = []
    statuses = iter(answers)

    def endpoint_app(request: httpx.Request) -> httpx.Response:
        status = next(statuses, 200)
        if status == 200:
            taken.append([e["id"] for e in json.loads(request.content)["events"]])
        return httpx.Response(status)

    settings = NotificationsSettings.model_validate(
        {"endpoints": [{"name": "ci", "url": "http://ci/hook", "batch": batch, "backoff": "10ms"}]}
    ).endpoints[0]
    await run_courier(settings, outbox, endpoint_app)
    return taken


async def test_rows_of_events_go_in_envelopes_of_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.01)
    outbox = outbox_of([['{"id":"1"}', '{"id":"2"}', '{"id":"3"}'], ['{"id":"4"}'], ['{"id":"5"}']])

    taken = await deliver(outbox, [], batch=2)

    assert taken == [["1", "2"], ["3", "4"], ["5"]]
    assert outbox.deleted == [[1, 2, 3]]


def test_envelopes_hold_up_to_the_batch_and_a_megabyte_and_at_least_one_event() -> None:
    small, large = '{"id":"s"}', '{"id":"' + "l" * 400_000 + '"}'
    events = [small] * 5 + [large] * 3 + ['{"id":"' + "x" * 1_200_000 + '"}', small]

    parted = list(notifications.envelopes(events, batch=3))

    assert [len(envelope) for envelope in parted] == [3, 3, 2, 1, 1]
    assert [event for envelope in parted for event in envelope] == events
    assert all(
        len(notifications.envelope(envelope)) <= notifications.ENVELOPE_BYTES
        for envelope in parted
        if len(envelope) > 1
    )
    # Three large ones would pass the megabyte: two go together, the third alone.
    assert [len(envelope) for envelope in notifications.envelopes([large] * 3, 10)] == [2, 1]
    assert len(notifications.envelope([large] * 3)) > notifications.ENVELOPE_BYTES


async def test_a_row_sent_in_part_stays_until_all_its_events_are_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.01)
    outbox = outbox_of([['{"id":"1"}'], ['{"id":"2"}', '{"id":"3"}', '{"id":"4"}']])

    taken = await deliver(outbox, [200, 503], batch=2)

    # Sent at least once: the second row again whole, after its first event went through.
    assert taken == [["1", "2"], ["2", "3"], ["4"]]
    assert outbox.deleted == [[1], [2]]


async def test_a_courier_that_sent_all_there_was_waits_before_reading_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.5)
    outbox = outbox_of([['{"id":"1"}', '{"id":"2"}']])

    settings = NotificationsSettings.model_validate(
        {"endpoints": [{"name": "ci", "url": "http://ci/hook"}]}
    ).endpoints[0]
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    async with httpx.AsyncClient(transport=transport) as client:
        courier = asyncio.create_task(Courier(settings, outbox, client).run())  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        courier.cancel()

    # One read served it all; the next waits for more to gather.
    assert (outbox.rows, outbox.deleted) == ([], [[1]])
    assert outbox.reads == 1


class FailingOnce:
    def __init__(self) -> None:
        self.written: list[Journal] = []
        self.failed = False

    async def record(self, journal: Journal) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("database is locked")
        self.written.append(journal)


async def test_pulls_that_could_not_be_written_are_written_next_time() -> None:
    store = FailingOnce()
    buffer = Buffer(store, Renderer([EndpointRules("ci")]))  # type: ignore[arg-type]
    buffer.add_pull((MANIFEST, CLIENT, 1))
    await buffer.flush()
    buffer.add_pull((BLOB, CLIENT, 2))
    await buffer.flush()

    (journal,) = store.written
    (notice,) = journal.notices
    assert [event["target"]["mediaType"] for event in events_of(notice.payload)] == [
        IMAGE,
        BLOB_MEDIA_TYPE,
    ]


def _pull_request(headers: dict[str, str], trusted: bool = False) -> Request:
    """A GET as the app sees it, on a registry whose endpoints want pulls."""
    state = SimpleNamespace(
        registry=SimpleNamespace(events=SimpleNamespace(pulls=True)),
        public_address=PublicAddress(trust_forwarded_headers=trusted),
    )
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/v2/team/app/manifests/v1",
        "client": ("192.0.2.7", 50123),
        "server": ("127.0.0.1", 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": SimpleNamespace(state=state),
    }
    return Request(scope)


def test_a_pull_origin_is_shared_by_a_clients_pulls_but_keeps_no_credentials() -> None:
    origins._pull_origins.clear()
    seen = {"Host": "registry.example.com", "User-Agent": "docker/24"}
    first = origins.pull_origin(_pull_request({**seen, "Authorization": "Basic c2VjcmV0"}))
    second = origins.pull_origin(_pull_request({**seen, "Authorization": "Bearer other"}))
    assert first is second
    kept = repr(list(origins._pull_origins))
    assert "c2VjcmV0" not in kept
    assert "other" not in kept
    # What the event reads still tells clients apart.
    podman = origins.pull_origin(_pull_request({**seen, "User-Agent": "podman/5"}))
    assert podman is not first
    assert podman is not None
    assert podman.user_agent == "podman/5"
    proxied = {**seen, "X-Forwarded-For": "198.51.100.9", "X-Forwarded-Host": "r.example"}
    behind = origins.pull_origin(_pull_request(proxied, trusted=True))
    assert behind is not None
    assert (behind.address, behind.base_url) == ("198.51.100.9", "http://r.example")
