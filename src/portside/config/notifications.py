"""The `notifications` section: CNCF distribution's webhook endpoints, under its key names, so that
a distribution config's section works as it is.

    notifications:
        events:
            includereferences: true
        endpoints:
            - name: ci
              url: https://ci.example.com/registry-events
              headers: {Authorization: [Bearer abc]}
              timeout: 1s
              threshold: 5
              backoff: 2s
              ignoredmediatypes: [application/octet-stream]
              ignore: {mediatypes: [], actions: [pull]}
              secret: _env:CI_WEBHOOK_SECRET     # Portside's: X-Portside-Signature
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

Action = Literal["push", "pull", "mount", "delete"]

# Go's time.Duration as distribution's YAML writes it: 500ms, 1s, 1m30s, 2h.
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _go_duration(value: object) -> object:
    """A Go duration string (500ms, 1m30s), or a number of seconds, as a timedelta."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 500ms, 1s or 1m30s, got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    parts = _GO_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(
            f"expected a duration such as 500ms, 1s or 1m30s (units ns, us, ms, s, m, h), "
            f"got {value!r}"
        )
    return timedelta(seconds=sum(float(number) * _GO_UNITS[unit] for number, unit in parts))


def _format_go_duration(value: timedelta) -> str:
    milliseconds = round(value.total_seconds() * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


GoDuration = Annotated[
    timedelta,
    BeforeValidator(_go_duration),
    PlainSerializer(_format_go_duration, return_type=str, when_used="json"),
]


def _one_or_many(value: object) -> object:
    return (value,) if isinstance(value, str) else value


class IgnoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mediatypes: tuple[str, ...] = Field(
        default=(), description="Events whose target has one of these media types are not sent."
    )
    actions: tuple[Action, ...] = Field(
        default=(), description="Events of these actions (push, pull, mount, delete) are not sent."
    )

    _lists = field_validator("mediatypes", "actions", mode="before")(_one_or_many)


class EndpointSettings(BaseModel):
    """One receiver of events, as distribution's `notifications.endpoints` entries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        max_length=200,
        description="Names the endpoint in logs and metrics, and its queue of events: renaming "
        "it starts an empty queue.",
    )
    url: str = Field(description="Where events are POSTed (http or https).")
    headers: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Headers added to each request, a value or a list of values by name "
        "(distribution's form), e.g. Authorization.",
    )
    timeout: GoDuration = Field(
        default=timedelta(seconds=1),
        description="How long a request may take before it counts as failed (500ms, 1s).",
    )
    threshold: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Failures in a row retried quickly (within `backoff`); then the waits "
        "between tries double from `backoff`, up to 5 minutes.",
    )
    backoff: GoDuration = Field(
        default=timedelta(seconds=1),
        description="The wait between tries once `threshold` failures came in a row (1s, 30s).",
    )
    ignoredmediatypes: tuple[str, ...] = Field(
        default=(), description="As ignore.mediatypes (distribution's older key)."
    )
    ignore: IgnoreSettings = Field(
        default_factory=IgnoreSettings, description="Events not to send to this endpoint."
    )
    disabled: bool = Field(
        default=False,
        description="Record no events for this endpoint and send it none; those already "
        "queued wait until it is enabled again.",
    )
    batch: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="Events per request at most (Portside's own): what waits is sent "
        "together, up to this many and 1 MB, so that a busy registry does not make a request "
        "per pull; 1 for a receiver that reads only the first event of an envelope.",
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        description="Sign each request with HMAC-SHA256 of its body under this key, in the "
        "header X-Portside-Signature: sha256=<hex> (Portside's own); null: unsigned.",
    )

    _lists = field_validator("ignoredmediatypes", mode="before")(_one_or_many)

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        text = value.strip()
        if not text.isprintable() or any(char.isspace() for char in text):
            raise ValueError(f"expected an http or https URL, got {value!r} (a control character)")
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises on a port that is not a number up to 65535
        except ValueError as exc:
            raise ValueError(f"bad URL {value!r}: {exc}") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http or https URL, got {value!r}")
        return text

    @field_validator("headers", mode="before")
    @classmethod
    def _header_values(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        headers: dict[object, object] = {}
        for name, given in value.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            values = _one_or_many(given)
            if isinstance(values, list | tuple):
                for item in values:
                    if not isinstance(item, str) or any(c in item for c in "\r\n\x00"):
                        raise ValueError(f"header {name}: a value must be one line of text")
            headers[name] = values
        return headers

    @field_validator("timeout", "backoff")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=1) <= value <= timedelta(hours=1):
            raise ValueError("expected a duration from 1ms to 1h")
        return value

    @property
    def ignored_media_types(self) -> frozenset[str]:
        return frozenset(self.ignore.mediatypes) | frozenset(self.ignoredmediatypes)


class EventsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    includereferences: bool = Field(
        default=False,
        description="List a manifest's references (layers, config, child manifests) in its "
        "push and pull events, as `target.references`.",
    )


class NotificationsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: tuple[EndpointSettings, ...] = Field(
        default=(), description="Where events go; none: no events are recorded."
    )
    events: EventsSettings = Field(default_factory=EventsSettings, description="What events carry.")

    @model_validator(mode="after")
    def _names_are_unique(self) -> NotificationsSettings:
        names = [endpoint.name for endpoint in self.endpoints]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"notifications.endpoints: names must be unique: {', '.join(twice)}")
        return self

    @property
    def enabled(self) -> tuple[EndpointSettings, ...]:
        """The endpoints that get events."""
        return tuple(endpoint for endpoint in self.endpoints if not endpoint.disabled)
