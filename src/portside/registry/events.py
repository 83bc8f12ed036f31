"""What the registry tells notification endpoints and the audit log about what it did.

Events have distribution's shape (notifications/event.go: id, timestamp, action, target, request,
actor, source), so receivers written for distribution read them as they are. A change's events
and audit entries travel as a Journal that the metadata store writes in the change's own
transaction; pulls, logins and refusals change nothing and go through a Buffer instead.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from portside.metadata.base import QUIET, AuditEntry, Journal, Notice
from portside.registry.event_ids import COUNTER_FORMAT, id_block, next_id

EVENTS_MEDIA_TYPE: Final = "application/vnd.docker.distribution.events.v2+json"
# What distribution gives a blob's events: it knows no better type for a blob.
BLOB_MEDIA_TYPE: Final = "application/octet-stream"


class Action(StrEnum):
    PUSH = "push"
    PULL = "pull"
    MOUNT = "mount"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked, and through which request: the event's `actor` and `request`, the audit
    entry's actor and address. request_id None: each event gets an id of its own when it is
    made (a pull's origin, which all pulls alike of one client share: one event per request)."""

    actor: str | None
    address: str
    host: str = ""
    method: str = ""
    user_agent: str = ""
    base_url: str = ""  # where the registry is reached, for the target's URL
    request_id: str | None = field(default_factory=next_id)


@dataclass(frozen=True, slots=True)
class Target:
    """What an event is about: a manifest, a tag or a blob in a repository."""

    repository: str
    digest: str | None = None
    media_type: str | None = None
    size: int | None = None
    tag: str | None = None
    from_repository: str | None = None
    references: tuple[dict[str, Any], ...] = ()
    blob: bool = False  # a blob's target links to /blobs/, a manifest's to /manifests/


@dataclass(frozen=True, slots=True)
class EndpointRules:
    """Which events an endpoint gets (distribution's `ignore` and `ignoredmediatypes`)."""

    name: str
    ignored_media_types: frozenset[str] = frozenset()
    ignored_actions: frozenset[str] = frozenset()

    def wants(self, action: Action, media_type: str | None) -> bool:
        return action not in self.ignored_actions and media_type not in self.ignored_media_types


# What a pull leaves in the request path: what was pulled, by whom, when (time.time_ns()). Its
# event is made later, when the sink writes it, so that a pull costs a tuple.
Pull = tuple[Target, Origin, int]

# Rows of several events written before PULLS (plain, or PACKED) part them by a newline, which
# the compact JSON of an event never holds; they are still read, so that an upgrade with events
# waiting loses none.
EVENT_SEPARATOR: Final = "\n"
# Pulls in one outbox row at most: a courier reads rows a hundred at a time, and sends their
# events in envelopes of its endpoint's batch, whatever the rows.
PULLS_PER_ROW: Final = 100
# A row of pulls: this, then the JSON of [prefix, first, templates, entries]. Pulls alike share
# their event's text but for its id, time and request id, so a row keeps each text once, as the
# template's parts around those (_Parts), and per pull three numbers: its template's index, its
# time in microseconds and its place n in the batch, whose ids are compose(prefix, first + 2n)
# and the next. A hundred pulls alike take 3 KB, where their text is 69 KB; the events are made
# when the courier reads the row.
PULLS: Final = "p:"
# Rows of pulls as written before PULLS: the base64 of their text, compressed by zlib.
PACKED: Final = "z:"


# Stand-ins for what differs between two pulls of one thing by one client (the event's id and
# time, the request's id): a pull's event is the text of its template with them put in.
_ID, _TIMESTAMP, _REQUEST_ID = "\x00id", "\x00timestamp", "\x00request"
# Templates kept, by what was pulled and who pulled it; all are forgotten beyond this many.
TEMPLATES_MAX: Final = 4096
# A pull event's text around its id, time and request id (quotes excluded): before the id,
# between the id and the time, between the time and the request id, after it; or, for an origin
# with a request id of its own, its text from the time on, and None.
_Parts = tuple[str, str, str, str | None]
# The names of the endpoints that want a pull's event, and its parts.
_Template = tuple[tuple[str, ...], _Parts]


# A pull as an endpoint's row keeps it: its template's parts, its time in µs, its place in the
# batch.
_RowPull = tuple[_Parts, int, int]


def _row_payload(pulls: Sequence[_RowPull], prefix: str, first: int) -> str:
    """The outbox payload of one endpoint's row of pulls, as PULLS describes."""
    templates: list[_Parts] = []
    indexes: dict[int, int] = {}  # by id() of the parts, which templates keeps
    entries: list[int] = []
    for parts, micros, n in pulls:
        index = indexes.get(id(parts))
        if index is None:
            index = indexes[id(parts)] = len(templates)
            templates.append(parts)
        entries += (index, micros, n)
    return PULLS + json.dumps([prefix, first, templates, entries], separators=(",", ":"))


class UnreadableRow(ValueError):
    """An outbox row in no format this version reads: written by a newer one, or damaged."""


def unpack(payload: str) -> list[str]:
    """The events of an outbox row's payload, in order; UnreadableRow if it has none."""
    try:
        if payload.startswith(PULLS):
            return _pull_events(payload)
        if payload.startswith(PACKED):
            payload = zlib.decompress(base64.b64decode(payload[len(PACKED) :])).decode("ascii")
    except (ValueError, TypeError, LookupError, zlib.error) as error:
        raise UnreadableRow(f"{type(error).__name__}: {error}") from None
    # An event's JSON is an object: anything else is a format this version does not know.
    if not payload.startswith("{"):
        raise UnreadableRow(f"no known format begins {payload[:8]!r}")
    return payload.split(EVENT_SEPARATOR)


def _pull_events(payload: str) -> list[str]:
    prefix, first, templates, entries = json.loads(payload[len(PULLS) :])
    # Each template's text joined around where the numbers and the time go, the ids' prefix in
    # it: an event is then one f-string (a fifth less time than composing its parts).
    runs: list[tuple[str, str, str, str | None]] = [
        (f'{head}"{prefix}', f'"{middle}"', f'"{after_time}', None)
        if tail is None
        else (f'{head}"{prefix}', f'"{middle}"', f'"{after_time}"{prefix}', f'"{tail}')
        for head, middle, after_time, tail in templates
    ]
    events: list[str] = []
    last_second, second_text = -1, ""
    digits = COUNTER_FORMAT  # the ids written as compose() writes them
    for index, micros, n in zip(entries[0::3], entries[1::3], entries[2::3], strict=True):
        before_id, before_time, after_time, tail = runs[index]
        number = first + 2 * n  # the event's id; its request's is the next
        # _timestamp's text, made a second at a time: a row's pulls come within a few.
        second, micro = divmod(micros, 1_000_000)
        if second != last_second:
            last_second, second_text = second, _second_text(second)
        stamp = f"{second_text}.{micro:06d}Z" if micro else f"{second_text}Z"
        if tail is None:
            events.append(f"{before_id}{number:{digits}}{before_time}{stamp}{after_time}")
        else:
            events.append(
                f"{before_id}{number:{digits}}{before_time}{stamp}"
                f"{after_time}{number + 1:{digits}}{tail}"
            )
    return events


def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat()[:-6]


class Sink(Protocol):
    """Where what changes nothing goes: written a batch at a time (event_buffer.Buffer)."""

    def add(self, journal: Journal) -> None: ...

    def add_pull(self, pull: Pull) -> None: ...


def references(content: bytes) -> tuple[dict[str, Any], ...]:
    """The descriptors a manifest references (config, layers, child manifests), as events list
    them: mediaType, size, digest."""
    try:
        document = json.loads(content)
    except ValueError:
        return ()
    if not isinstance(document, dict):
        return ()
    found = [document.get("config"), *document.get("layers", ()), *document.get("manifests", ())]
    return tuple(
        {key: item[key] for key in ("mediaType", "size", "digest") if key in item}
        for item in found
        if isinstance(item, dict) and "digest" in item
    )


class Renderer:
    """Writes events as the JSON text the outbox keeps: a change's one by one, pulls a batch
    per outbox row."""

    def __init__(
        self,
        endpoints: Sequence[EndpointRules] = (),
        *,
        include_references: bool = False,
        source: dict[str, str] | None = None,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.include_references = include_references and bool(self.endpoints)
        self._source = source or {}
        self._templates: dict[tuple[int, int], tuple[Target, Origin, _Template]] = {}

    def notices(self, action: Action, target: Target, origin: Origin) -> tuple[Notice, ...]:
        """A change's event, one notice per endpoint that wants it."""
        wanting = [e.name for e in self.endpoints if e.wants(action, target.media_type)]
        if not wanting:
            return ()
        event = self.event(action, target, origin, str(uuid.uuid4()), _timestamp(datetime.now(UTC)))
        payload = self.payload(event)
        return tuple(Notice(name, payload) for name in wanting)

    def pull_notices(self, pulls: Sequence[Pull]) -> tuple[Notice, ...]:
        """The events of these pulls, for each endpoint that wants them in their order, up to
        PULLS_PER_ROW in one notice (see PULLS); one pull's event has one id at all of them."""
        prefix, first = id_block(2 * len(pulls))
        # Each endpoint's pulls in order first, then cut into rows: no per-pull row bookkeeping.
        wanted: dict[str, list[_RowPull]] = {endpoint.name: [] for endpoint in self.endpoints}
        for n, (target, origin, at) in enumerate(pulls):
            names, parts = self._pull_template(target, origin)
            pull = (parts, at // 1000, n)
            for name in names:
                wanted[name].append(pull)
        return tuple(
            Notice(name, _row_payload(kept[start : start + PULLS_PER_ROW], prefix, first))
            for name, kept in wanted.items()
            for start in range(0, len(kept), PULLS_PER_ROW)
        )

    def _pull_template(self, target: Target, origin: Origin) -> _Template:
        # By identity: a registry makes one Target per thing pulled (Recorder.target) and one
        # Origin per client (api/origins.py), so hashing them field by field would be wasted.
        # The value keeps both, so their ids cannot be reused while it is kept.
        key = (id(target), id(origin))
        found = self._templates.get(key)
        if found is not None and found[0] is target and found[1] is origin:
            return found[2]
        wanting = tuple(e.name for e in self.endpoints if e.wants(Action.PULL, target.media_type))
        own_request = origin.request_id is not None
        probe = origin if own_request else replace(origin, request_id=_REQUEST_ID)
        text = self.payload(self.event(Action.PULL, target, probe, _ID, _TIMESTAMP))
        head, _, rest = text.partition(json.dumps(_ID))
        middle, _, rest = rest.partition(json.dumps(_TIMESTAMP))
        parts: _Parts = (head, middle, rest, None)
        if not own_request:
            before_request, _, tail = rest.partition(json.dumps(_REQUEST_ID))
            parts = (head, middle, before_request, tail)
        if len(self._templates) >= TEMPLATES_MAX:
            self._templates.clear()
        self._templates[key] = (target, origin, (wanting, parts))
        return wanting, parts

    @staticmethod
    def payload(event: dict[str, Any]) -> str:
        return json.dumps(event, separators=(",", ":"))

    def event(
        self, action: Action, target: Target, origin: Origin, id: str, timestamp: str
    ) -> dict[str, Any]:
        """distribution's event (notifications/event.go), its keys in distribution's order."""
        described: dict[str, Any] = {}
        if target.media_type:
            described["mediaType"] = target.media_type
        if target.size is not None:
            described["size"] = target.size
        if target.digest:
            described["digest"] = target.digest
        if target.size is not None:
            described["length"] = target.size  # distribution's older name for size
        described["repository"] = target.repository
        if target.from_repository:
            described["fromRepository"] = target.from_repository
        if target.digest and origin.base_url and action is not Action.DELETE:
            kind = "blobs" if target.blob else "manifests"
            described["url"] = f"{origin.base_url}/v2/{target.repository}/{kind}/{target.digest}"
        if target.tag:
            described["tag"] = target.tag
        if target.references and self.include_references:
            described["references"] = list(target.references)
        request = {
            "id": origin.request_id or next_id(),
            "method": origin.method,
            "useragent": origin.user_agent,
        }
        if origin.address:
            request["addr"] = origin.address
        if origin.host:
            request["host"] = origin.host
        return {
            "id": id,
            "timestamp": timestamp,
            "action": action.value,
            "target": described,
            "request": request,
            "actor": {} if origin.actor is None else {"name": origin.actor},
            "source": self._source,
        }


def _timestamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class Recorder:
    """Turns what the registry did into outbox notices, one per endpoint that wants it, and
    audit entries. With no endpoint and no audit log it makes empty journals, at no cost."""

    def __init__(
        self,
        endpoints: Sequence[EndpointRules] = (),
        *,
        audit: bool = False,
        include_references: bool = False,
        source: dict[str, str] | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.renderer = Renderer(endpoints, include_references=include_references, source=source)
        self._audit = audit
        self.include_references = self.renderer.include_references
        self.sink = sink
        self.active = audit or bool(self.renderer.endpoints)
        # Whether any endpoint gets pulls: if none does, a pull costs nothing at all.
        self.pulls = sink is not None and any(
            Action.PULL not in endpoint.ignored_actions for endpoint in self.renderer.endpoints
        )
        self.notes = sink is not None and audit
        self._targets: dict[tuple[object, ...], Target] = {}

    def journal(
        self,
        action: Action,
        target: Target,
        origin: Origin | None,
        detail: Any = None,
        *,
        audited: bool = True,
    ) -> Journal:
        """The journal of a change, for the metadata store to write with it; audited False:
        events only (a blob's push: the manifest's push is what the audit log keeps)."""
        if not self.active or origin is None:
            return QUIET
        notices = self.renderer.notices(action, target, origin)
        audit: tuple[AuditEntry, ...] = ()
        if self._audit and audited:
            audit = (self._entry(action.value, target, origin, detail),)
        return Journal(notices, audit)

    def target(self, key: tuple[object, ...], make: Callable[[], Target]) -> Target:
        """The Target that make() returns for what key names, made once: a pull then builds
        none, and its event's template is found by identity (Renderer._pull_template)."""
        found = self._targets.get(key)
        if found is None:
            if len(self._targets) >= TEMPLATES_MAX:
                self._targets.clear()
            found = self._targets[key] = make()
        return found

    def pulled(self, target: Target, origin: Origin) -> None:
        """A pull: buffered, since it changes nothing (lost only if the process dies first);
        its event is made when the buffer is written (Renderer.pull_notices)."""
        if self.pulls and self.sink is not None:
            self.sink.add_pull((target, origin, time.time_ns()))

    def note(self, action: str, origin: Origin, repository: str = "", detail: Any = None) -> None:
        """An audit entry of no change (a login, a refusal): buffered as pulls are."""
        if self.notes and self.sink is not None:
            entry = self._entry(action, Target(repository), origin, detail)
            self.sink.add(Journal(audit=(entry,)))

    def _entry(self, action: str, target: Target, origin: Origin, detail: Any) -> AuditEntry:
        return AuditEntry(
            at=datetime.now(UTC),
            action=action,
            actor=origin.actor,
            address=origin.address,
            repository=target.repository or None,
            digest=target.digest,
            tag=target.tag,
            detail=None if detail is None else json.dumps(detail, separators=(",", ":")),
        )
