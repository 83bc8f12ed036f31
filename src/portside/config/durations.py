"""Durations in config: `90s`, `30m`, `1h`, `2d`, `1w` or a number of seconds, written back the
same way."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]?)\s*", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _parse_duration(value: object) -> object:
    """Turn `90s`, `30m`, `1h`, `2d`, `1w` or a number of seconds into a timedelta; an ISO 8601
    duration (`PT1H`) passes through to pydantic."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 90s, 30m, 1h or 2d, got {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if not isinstance(value, str) or value.strip().upper().startswith("P"):
        return value
    match = _DURATION.fullmatch(value)
    factor = _DURATION_UNITS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise ValueError(
            f"expected a duration such as 90s, 30m, 1h or 2d (units s, m, h, d, w; none: "
            f"seconds), got {value!r}"
        )
    return timedelta(seconds=float(match.group(1)) * factor)


def _format_duration(value: timedelta) -> str:
    """The largest whole unit: `1h`, `90m`, `2d`; `0s` for none."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# In config: 30m, 1h, 2d or seconds; written back (config check, the workers' copy) the same way.
Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    PlainSerializer(_format_duration, return_type=str, when_used="json"),
]
