"""The audit log outside the server: what `portside audit` lists, and the entries `portside user`
adds for the htpasswd changes it makes."""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from portside.config.settings import Settings
from portside.metadata.base import AuditEntry, AuditQuery, AuditRecord, Journal
from portside.metadata.sql import SqlMetadataStore
from portside.server.ownership import sqlite_file

_AGO = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A moment: an ISO 8601 date or time (UTC unless it says otherwise), or a duration ago
    (30m, 12h, 7d, 2w). ValueError naming both forms otherwise."""
    now = now or datetime.now(UTC)
    ago = _AGO.fullmatch(text.strip())
    if ago is not None:
        return now - timedelta(seconds=int(ago[1]) * _UNITS[ago[2]])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a date or time such as 2024-05-01 or 2024-05-01T12:00, or a duration "
            f"ago such as 30m, 12h or 7d, got {text!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def as_json(record: AuditRecord) -> dict[str, Any]:
    entry = record.entry
    return {
        "id": record.id,
        "time": entry.at.isoformat().replace("+00:00", "Z"),
        "action": entry.action,
        "user": entry.actor,
        "address": entry.address,
        "repository": entry.repository,
        "digest": entry.digest,
        "tag": entry.tag,
        "previous": entry.previous,
        "detail": None if entry.detail is None else json.loads(entry.detail),
    }


def as_line(record: AuditRecord) -> str:
    """One line: time, action, user, address, then what it was about."""
    entry = record.entry
    what = entry.repository or ""
    if entry.tag:
        what += f":{entry.tag}"
    if entry.digest:
        what += f"@{entry.digest}"
    if entry.previous:
        what += f" (was {entry.previous})"
    if entry.detail:
        what += f" {entry.detail}"
    when = entry.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    user = entry.actor or "-"
    return f"{when} {entry.action:<15} {user:<16} {entry.address or '-':<15} {what}".rstrip()


async def read_entries(settings: Settings, query: AuditQuery) -> list[AuditRecord]:
    store = SqlMetadataStore(settings.metadata_url)
    try:
        return await store.audit_entries(query)
    finally:
        await store.close()


def operator() -> str:
    """Who runs the command: the user sudo ran it for, else the login."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


async def record_user_change(settings: Settings, action: str, username: str) -> str | None:
    """Audit a change `portside user` made; a warning instead when it cannot be recorded."""
    if settings.audit is None or not settings.audit.enabled:
        return None
    database = sqlite_file(settings.metadata_url)
    if database is not None and not database.exists():
        # Creating it here could leave it owned by root, not the service: `serve` makes it.
        return f"audit: not recorded, no metadata database at {database} yet"
    entry = AuditEntry(
        at=datetime.now(UTC),
        action=action,
        actor=operator(),
        address=socket.gethostname(),
        detail=json.dumps({"user": username}),
    )
    store = SqlMetadataStore(settings.metadata_url)
    try:
        await store.record(Journal(audit=(entry,)))
    except Exception as error:  # a schema not migrated yet, a database that is down
        return f"audit: not recorded ({type(error).__name__}: {error})"
    finally:
        await store.close()
    return None
