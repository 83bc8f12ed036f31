"""WWW-Authenticate challenges (RFC 9110 section 11.6.1): `Bearer realm="…",service="…"`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME: Final = re.compile(rf"[\s,]*({_TCHARS})(?=\s|,|$)")
_PARAM: Final = re.compile(rf'[\s,]*({_TCHARS})\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)')
_ESCAPE: Final = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)  # names lowercase, values unquoted


def parse_challenges(values: Iterable[str]) -> list[Challenge]:
    """The challenges in the given header values, several per value allowed; what cannot be read
    ends the value's parse."""
    challenges: list[Challenge] = []
    for value in values:
        position = 0
        while position < len(value):
            param = _PARAM.match(value, position)
            if param and challenges:
                raw = param[2]
                if raw.startswith('"'):
                    raw = _ESCAPE.sub(r"\1", raw[1:-1])
                challenges[-1].params[param[1].lower()] = raw
                position = param.end()
                continue
            scheme = _SCHEME.match(value, position)
            if scheme is None:
                break
            challenges.append(Challenge(scheme[1].lower()))
            position = scheme.end()
    return challenges
