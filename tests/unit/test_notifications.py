"""Notifications in process: the config section, the events' shape and ignore rules, the envelope,
its signature, the retry delays, and a courier against a fake endpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from outbox import Outbox, run_courier
from portside.config.notifications import NotificationsSettings
from portside.metadata.base import Journal
from portside.metrics import notifications as notification_metrics
from portside.registry.events import (
    BLOB_MEDIA_TYPE,
    EVENTS_MEDIA_TYPE,
    Action,
    EndpointRules,
    Origin,
    Pull,
    Recorder,
    Target,
)
from portside.server import notifications
from portside.server.notifications import envelope, retry_delay, signature

IMAGE = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "a" * 64
ORIGIN = Origin(
    actor="alice",
    address="192.0.2.7",
    host="registry.example.com",
    method="PUT",
    user_agent="skopeo/1.13",
    base_url="https://registry.example.com",
    request_id="req-1",
)


def endpoint(**extra: Any) -> dict[str, Any]:
    return {"name": "ci", "url": "https://ci.example.com/hook", **extra}


# The config section -----------------------------------------------------------------------------


def test_a_distribution_endpoint_section_is_accepted_as_it_is() -> None:
    settings = NotificationsSettings.model_validate(
        {
            "events": {"includereferences": True},
            "endpoints": [
                endpoint(
                    headers={"Authorization": ["Bearer abc"], "X-One": "1"},
                    timeout="500ms",
                    threshold=5,
                    backoff="1m30s",
                    ignoredmediatypes=["application/octet-stream"],
                    ignore={"mediatypes": ["text/plain"], "actions": ["pull"]},
                    disabled=False,
                )
            ],
        }
    )
    (ci,) = settings.enabled
    assert ci.headers == {"Authorization": ("Bearer abc",), "X-One": ("1",)}
    assert ci.timeout == timedelta(milliseconds=500)
    assert ci.backoff == timedelta(seconds=90)
    assert ci.ignored_media_types == {"application/octet-stream", "text/plain"}
    assert settings.events.includereferences
    assert json.loads(settings.model_dump_json())["endpoints"][0]["timeout"] == "500ms"


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        (endpoint(url="ftp://ci.example.com/"), "http or https URL"),
        (endpoint(url="https://ci.example.com/\x00"), "control character"),
        (endpoint(timeout="soon"), "500ms, 1s or 1m30s"),
        (endpoint(timeout="0s"), "from 1ms to 1h"),
        (endpoint(threshold=0), "greater than or equal to 1"),
        (endpoint(ignore={"actions": ["pul"]}), "'push', 'pull', 'mount' or 'delete'"),
        (endpoint(headers={"Bad Name": "x"}), "not an HTTP header name"),
        (endpoint(headers={"X-A": "a\r\nX-B: b"}), "one line of text"),
        (endpoint(secret="short"), "at least 16 characters"),
        (endpoint(retries=3), "Extra inputs are not permitted"),
        (endpoint(name=""), "at least 1 character"),
        (endpoint(batch=0), "greater than or equal to 1"),
        (endpoint(batch=10_001), "less than or equal to 10000"),
        (endpoint(batch="many"), "valid integer"),
    ],
)
def test_a_bad_endpoint_is_refused_with_the_reason(given: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        NotificationsSettings.model_validate({"endpoints": [given]})


def test_endpoint_names_are_unique() -> None:
    with pytest.raises(ValidationError, match="names must be unique: ci"):
        NotificationsSettings.model_validate({"endpoints": [endpoint(), endpoint()]})


def test_a_disabled_endpoint_gets_nothing() -> None:
    settings = NotificationsSettings.model_validate({"endpoints": [endpoint(disabled=True)]})
    assert settings.enabled == ()


# Events -----------------------------------------------------------------------------------------


class Gathered:
    def __init__(self) -> None:
        self.journals: list[Journal] = []
        self.pulls: list[Pull] = []

    def add(self, journal: Journal) -> None:
        self.journals.append(journal)

    def add_pull(self, pull: Pull) -> None:
        self.pulls.append(pull)


def test_a_manifest_push_event_has_distributions_shape() -> None:
    recorder = Recorder(
        [EndpointRules("ci")],
        include_references=True,
        source={"addr": "node-1:5000", "instanceID": "i-1"},
    )
    layer = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "size": 3,
        "digest": DIGEST,
    }
    target = Target("team/app", DIGEST, IMAGE, 120, "latest", references=(layer,))

    (notice,) = recorder.journal(Action.PUSH, target, ORIGIN).notices
    event = json.loads(notice.payload)

    assert notice.endpoint == "ci"
    assert set(event) == {"id", "timestamp", "action", "target", "request", "actor", "source"}
    assert event["action"] == "push"
    assert event["timestamp"].endswith("Z")
    assert event["target"] == {
        "mediaType": IMAGE,
        "size": 120,
        "digest": DIGEST,
        "length": 120,
        "repository": "team/app",
        "url": f"https://registry.example.com/v2/team/app/manifests/{DIGEST}",
        "tag": "latest",
        "references": [layer],
    }
    assert event["request"] == {
        "id": "req-1",
        "addr": "192.0.2.7",
        "host": "registry.example.com",
        "method": "PUT",
        "useragent": "skopeo/1.13",
    }
    assert event["actor"] == {"name": "alice"}
    assert event["source"] == {"addr": "node-1:5000", "instanceID": "i-1"}


def test_mount_and_delete_events_name_what_they_need() -> None:
    recorder = Recorder([EndpointRules("ci")])
    mounted = Target("team/copy", DIGEST, BLOB_MEDIA_TYPE, 3, from_repository="team/app", blob=True)
    mount = json.loads(recorder.journal(Action.MOUNT, mounted, ORIGIN).notices[0].payload)
    delete = recorder.journal(Action.DELETE, Target("team/app", tag="old"), ORIGIN)

    assert mount["target"]["fromRepository"] == "team/app"
    assert mount["target"]["url"].endswith(f"/v2/team/copy/blobs/{DIGEST}")
    assert json.loads(delete.notices[0].payload)["target"] == {
        "repository": "team/app",
        "tag": "old",
    }
    assert not recorder.journal(Action.PUSH, mounted, ORIGIN).audit  # no audit log configured


def test_ignore_rules_choose_the_endpoints_of_each_event() -> None:
    recorder = Recorder(
        [
            EndpointRules("all"),
            EndpointRules("no-blobs", ignored_media_types=frozenset({BLOB_MEDIA_TYPE})),
            EndpointRules("no-deletes", ignored_actions=frozenset({"delete"})),
        ]
    )
    blob = Target("team/app", DIGEST, BLOB_MEDIA_TYPE, 3, blob=True)
    manifest_delete = Target("team/app", DIGEST)

    def endpoints(action: Action, target: Target) -> list[str]:
        return [n.endpoint for n in recorder.journal(action, target, ORIGIN).notices]

    assert endpoints(Action.PUSH, blob) == ["all", "no-deletes"]
    assert endpoints(Action.DELETE, manifest_delete) == ["all", "no-blobs"]


def test_pulls_go_to_the_buffer_only_where_an_endpoint_wants_them() -> None:
    gathered = Gathered()
    blob = Target("team/app", DIGEST, BLOB_MEDIA_TYPE, 3, blob=True)
    quiet = Recorder(
        [EndpointRules("ci", ignored_actions=frozenset({"pull"}))], audit=True, sink=gathered
    )
    assert not quiet.pulls
    quiet.pulled(blob, ORIGIN)
    assert gathered.pulls == []

    loud = Recorder([EndpointRules("ci")], sink=gathered)
    loud.pulled(blob, ORIGIN)
    assert [(target, origin) for target, origin, _ in gathered.pulls] == [(blob, ORIGIN)]
    assert gathered.journals == []


def test_the_audit_log_keeps_a_push_with_its_user_and_address() -> None:
    recorder = Recorder(audit=True)
    journal = recorder.journal(Action.PUSH, Target("team/app", DIGEST, IMAGE, 1, "v1"), ORIGIN)

    assert journal.notices == ()
    (entry,) = journal.audit
    assert (entry.action, entry.actor, entry.address) == ("push", "alice", "192.0.2.7")
    assert (entry.repository, entry.digest, entry.tag) == ("team/app", DIGEST, "v1")


# Delivery ---------------------------------------------------------------------------------------


def test_the_envelope_holds_the_stored_events_as_they_are() -> None:
    assert json.loads(envelope(['{"id":"a"}', '{"id":"b"}'])) == {
        "events": [{"id": "a"}, {"id": "b"}]
    }


def test_the_signature_is_an_hmac_of_the_body() -> None:
    body = b'{"events":[]}'
    expected = hmac.new(b"0123456789abcdef", body, hashlib.sha256).hexdigest()
    assert signature("0123456789abcdef", body) == f"sha256={expected}"


def test_retries_are_quick_up_to_the_threshold_then_back_off_doubling() -> None:
    delays = [retry_delay(failures, threshold=3, backoff=2.0) for failures in range(1, 9)]
    assert delays[:2] == [0.05, 0.1]
    assert delays[2:] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert retry_delay(40, threshold=3, backoff=2.0) == 300.0
    assert retry_delay(40, threshold=3, backoff=600.0) == 600.0


async def taken(outbox: Outbox) -> list[list[str]]:
    """The ids in each envelope that an endpoint of the default settings, answering 204, takes."""
    envelopes: list[list[str]] = []

    def endpoint_app(request: httpx.Request) -> httpx.Response:
        envelopes.append([e["id"] for e in json.loads(request.content)["events"]])
        return httpx.Response(204)

    settings = NotificationsSettings.model_validate({"endpoints": [endpoint()]}).endpoints[0]
    await run_courier(settings, outbox, endpoint_app)
    return envelopes


async def test_a_courier_retries_until_the_endpoint_takes_each_event_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.01)
    received: list[tuple[list[str], httpx.Headers]] = []
    answers = iter([503, 200, 500, 500, 204])

    def endpoint_app(request: httpx.Request) -> httpx.Response:
        status = next(answers, 200)
        if status < 300:
            ids = [e["id"] for e in json.loads(request.content)["events"]]
            received.append((ids, request.headers))
        return httpx.Response(status)

    settings = NotificationsSettings.model_validate(
        {
            "endpoints": [
                endpoint(
                    headers={"Authorization": "Bearer abc"},
                    backoff="10ms",
                    threshold=1,
                    secret="0123456789abcdef",
                    batch=1,
                )
            ]
        }
    ).endpoints[0]
    outbox = Outbox(['{"id":"1"}', '{"id":"2"}', '{"id":"3"}'])
    kinds = ("Events", "Successes", "Failures", "Errors")
    before = {kind: notification_metrics.events.labels(kind, "ci").total for kind in kinds}
    codes = ("200", "204", "500", "503")
    before_codes = {code: notification_metrics.status.labels(code, "ci").total for code in codes}
    await run_courier(settings, outbox, endpoint_app)

    assert [ids for ids, _ in received] == [["1"], ["2"], ["3"]]
    counted = {k: notification_metrics.events.labels(k, "ci").total - before[k] for k in kinds}
    assert counted == {"Events": 6, "Successes": 3, "Failures": 3, "Errors": 0}
    statuses = {
        code: notification_metrics.status.labels(code, "ci").total - before_codes[code]
        for code in codes
    }
    assert statuses == {"200": 2, "204": 1, "500": 2, "503": 1}
    assert notification_metrics.pending.labels("ci").value == 0
    headers = received[0][1]
    assert headers["content-type"] == EVENTS_MEDIA_TYPE
    assert headers["authorization"] == "Bearer abc"
    assert headers["x-portside-signature"] == signature(
        "0123456789abcdef", b'{"events":[{"id":"1"}]}'
    )


async def test_by_default_the_events_waiting_go_in_one_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.01)
    outbox = Outbox([f'{{"id":"{i}"}}' for i in range(1, 151)])

    # Read 100 at a time: one request for each read, in order.
    assert await taken(outbox) == [
        [str(i) for i in range(1, 101)],
        [str(i) for i in range(101, 151)],
    ]


async def test_a_row_no_version_reads_is_logged_and_dropped_not_blocking_the_rest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Written by a newer version (a downgrade with events waiting), or damaged: the events
    after it still go, and the row's text is in the log."""
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.01)
    unreadable = ["p:[1,2]", "z:not base64!", "q:a future format", ""]
    outbox = Outbox(['{"id":"1"}', *unreadable, '{"id":"2"}'])

    assert await taken(outbox) == [["1", "2"]]
    assert outbox.rows == []
    dropped = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(dropped) == len(unreadable)
    assert all(payload in message for payload, message in zip(unreadable, dropped, strict=True))


async def test_rows_none_of_which_can_be_read_are_dropped_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifications, "POLL_SECONDS", 0.01)
    outbox = Outbox(["q:1", "q:2"])

    assert await taken(outbox) == []
    assert outbox.rows == []
