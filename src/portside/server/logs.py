"""Log lines on stdout, one per event, as text or as JSON objects (`log_format`), in a form
journald files by priority.

A JSON line has `level`, `msg`, `time` and `logger`; a request's line (portside.access) has
distribution's fields instead of `logger`, so that pipelines that parse distribution's logs
parse these:

    {"level": "info", "msg": "response completed", "time": "2026-01-02T03:04:05.678901Z",
     "http.request.method": "GET", "http.request.uri": "/v2/", "http.request.remoteaddr":
     "10.0.0.7:50312", "http.request.useragent": "docker/27.3.1 ...", "http.response.status":
     200, "http.response.written": 2, "http.response.duration": "1.109458ms"}

The URI is the path without its query string, which can carry secrets (a token service's
password grant, presigned parameters). What a handler notes (cache=hit) follows as
`portside.cache` and so on.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

# syslog priorities, which journald reads from a `<N>` prefix on each line of a service's stdout.
PRIORITY: Final = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
# The attribute of a log record that holds the request it is about (logging's `extra`).
ACCESS: Final = "access"

LogFormat = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class Access:
    """What the access log line says of one request."""

    method: str
    path: str  # without the query string
    client: tuple[str, int] | None
    user_agent: str
    status: int
    written: int  # body bytes sent
    seconds: float
    notes: dict[str, str] = field(default_factory=dict)


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


class JsonFormatter(logging.Formatter):
    """A JSON object per record; with `journald`, after the priority prefix, which journald
    strips from the message (so the JSON stays whole) and files the record by."""

    def __init__(self, journald: bool = False) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "time": _rfc3339(record.created),
        }
        access: Access | None = getattr(record, ACCESS, None)
        if access is None:
            fields["logger"] = record.name
        else:
            fields["msg"] = "response completed"
            fields |= access_fields(access)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        line = json.dumps(fields, ensure_ascii=False, default=str)
        return f"<{PRIORITY.get(record.levelno, 6)}>{line}" if self.journald else line


def access_fields(access: Access) -> dict[str, object]:
    """distribution's fields of a request's log entry ("response completed")."""
    fields: dict[str, object] = {
        "http.request.method": access.method,
        "http.request.uri": access.path,
        "http.request.remoteaddr": _address(access.client),
        "http.request.useragent": access.user_agent,
        "http.response.status": access.status,
        "http.response.written": access.written,
        "http.response.duration": go_duration(access.seconds),
    }
    for key, value in access.notes.items():
        fields[f"portside.{key}"] = value
    return fields


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it, as distribution's logs carry it: 850ns,
    12.5µs, 1.109458ms, 2.5s, 1m30s, 2h0m5.25s."""
    nanoseconds = round(seconds * 1e9)
    if nanoseconds <= 0:
        return "0s"
    if nanoseconds < 1_000:
        return f"{nanoseconds}ns"
    if nanoseconds < 1_000_000:
        return _decimal(nanoseconds, 1_000) + "µs"
    if nanoseconds < 1_000_000_000:
        return _decimal(nanoseconds, 1_000_000) + "ms"
    hours, rest = divmod(nanoseconds, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _decimal(rest, 10**9) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _decimal(value: int, unit: int) -> str:
    whole, part = divmod(value, unit)
    digits = str(part).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _address(client: tuple[str, int] | None) -> str:
    if client is None:
        return "-"
    host, port = client
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def configure(level: str, journald: bool, log_format: LogFormat = "text") -> None:
    """Send every log record to stdout: with a syslog priority prefix under systemd (journald adds
    the time), with time and level in a terminal; or as JSON objects, prefixed under systemd."""
    handler = logging.StreamHandler(sys.stdout)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(journald))
    elif journald:
        handler.setFormatter(JournalFormatter("%(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Their debug lines say nothing an operator of a registry needs.
    # httpx logs each request to an upstream with its full URL (presigned signatures too).
    for noisy in ("asyncio", "alembic", "sqlalchemy", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
