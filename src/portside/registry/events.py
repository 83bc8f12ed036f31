"""What the registry tells notification endpoints and the audit log about what it did.

Events have distribution's shape (notifications/event.go: id, timestamp, action, target, request,
actor, source), so receivers written for distribution read them as they are. A change's events
and audit entries travel as a Journal that the metadata store writes in the change's own
transaction; pulls, logins and refusals change nothing and go through a Buffer instead.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from portside.metadata.base import QUIET, AuditEntry, Journal, Notice

EVENTS_MEDIA_TYPE: Final = "application/vnd.docker.distribution.events.v2+json"
# What distribution gives a blob's events: it knows no better type for a blob.
BLOB_MEDIA_TYPE: Final = "application/octet-stream"


class Action(StrEnum):
    PUSH = "push"
    PULL = "pull"
    MOUNT = "mount"
    DELETE = "delete"


def _request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked, and through which request: the event's `actor` and `request`, the audit
    entry's actor and address."""

    actor: str | None
    address: str
    host: str = ""
    method: str = ""
    user_agent: str = ""
    base_url: str = ""  # where the registry is reached, for the target's URL
    request_id: str = field(default_factory=_request_id)


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


class Sink(Protocol):
    """Where journals of no change go: written a batch at a time (event_buffer.Buffer)."""

    def add(self, journal: Journal) -> None: ...


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
        self._endpoints = tuple(endpoints)
        self._audit = audit
        self.include_references = include_references and bool(self._endpoints)
        self._source = source or {}
        self.sink = sink
        self.active = audit or bool(self._endpoints)
        # Whether any endpoint gets pulls: if none does, a pull costs nothing at all.
        self.pulls = sink is not None and any(
            Action.PULL not in endpoint.ignored_actions for endpoint in self._endpoints
        )
        self.notes = sink is not None and audit

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
        notices = self._notices(action, target, origin)
        audit: tuple[AuditEntry, ...] = ()
        if self._audit and audited:
            audit = (self._entry(action.value, target, origin, detail),)
        return Journal(notices, audit)

    def pulled(self, target: Target, origin: Origin) -> None:
        """A pull: buffered, since it changes nothing (lost only if the process dies first)."""
        if self.pulls and self.sink is not None:
            self.sink.add(Journal(self._notices(Action.PULL, target, origin)))

    def note(self, action: str, origin: Origin, repository: str = "", detail: Any = None) -> None:
        """An audit entry of no change (a login, a refusal): buffered as pulls are."""
        if self.notes and self.sink is not None:
            entry = self._entry(action, Target(repository), origin, detail)
            self.sink.add(Journal(audit=(entry,)))

    def _notices(self, action: Action, target: Target, origin: Origin) -> tuple[Notice, ...]:
        wanting = [e.name for e in self._endpoints if e.wants(action, target.media_type)]
        if not wanting:
            return ()
        payload = json.dumps(self._event(action, target, origin), separators=(",", ":"))
        return tuple(Notice(name, payload) for name in wanting)

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

    def _event(self, action: Action, target: Target, origin: Origin) -> dict[str, Any]:
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
        request = {"id": origin.request_id, "method": origin.method, "useragent": origin.user_agent}
        if origin.address:
            request["addr"] = origin.address
        if origin.host:
            request["host"] = origin.host
        return {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "action": action.value,
            "target": described,
            "request": request,
            "actor": {} if origin.actor is None else {"name": origin.actor},
            "source": self._source,
        }
