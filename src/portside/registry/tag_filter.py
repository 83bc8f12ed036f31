"""Which tags `portside sync` copies: shell-style patterns (`v1.*`, `*-alpine`) and semantic
version ranges (`>=1.2,<2`), on tags such as `1.2.3`, `v1.2` or `2`.

A range is comparisons joined by commas, all of which must hold: `>=`, `>`, `<=`, `<`, `==`,
`!=`, and `~1.2` (at least 1.2, below 1.3) and `^1.2` (at least 1.2, below 2). A tag that is no
version (`latest`, `1.2-alpine`) is in no range.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

Version = tuple[int, int, int]

_VERSION: Final = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_COMPARISON: Final = re.compile(r"\s*(>=|<=|==|!=|>|<|~|\^)?\s*(\S+?)\s*")
_OPERATORS: Final[dict[str, Callable[[Version, Version], bool]]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class InvalidFilter(ValueError):
    """A pattern or range that cannot be read."""


def version(tag: str) -> Version | None:
    """The version a tag names (missing parts are 0), or None."""
    found = _VERSION.fullmatch(tag)
    if found is None:
        return None
    major, minor, patch = (int(part or 0) for part in found.groups())
    return major, minor, patch


def _bounds(symbol: str, text: str) -> list[tuple[str, Version]]:
    """The comparisons a range part stands for."""
    found = version(text)
    if found is None:
        raise InvalidFilter(f"{text!r} is no version (1, 1.2 or 1.2.3)")
    if symbol == "~":
        major, minor, _ = found
        return [(">=", found), ("<", (major, minor + 1, 0))]
    if symbol == "^":
        return [(">=", found), ("<", (found[0] + 1, 0, 0))]
    return [(symbol or "==", found)]


@dataclass(frozen=True, slots=True)
class TagFilter:
    patterns: tuple[str, ...] = ()  # a tag must match one of them, if any are given
    comparisons: tuple[tuple[str, Version], ...] = ()  # and be a version that meets them all

    @classmethod
    def parse(cls, patterns: Sequence[str], version_range: str | None) -> TagFilter:
        for pattern in patterns:
            if not pattern or any(c.isspace() for c in pattern):
                raise InvalidFilter(f"tag pattern {pattern!r} is empty or holds spaces")
        comparisons: list[tuple[str, Version]] = []
        for part in (version_range or "").split(",") if version_range is not None else []:
            found = _COMPARISON.fullmatch(part)
            if found is None or not found.group(2):
                raise InvalidFilter(f"version range part {part!r} is no comparison (>=1.2)")
            comparisons += _bounds(found.group(1) or "", found.group(2))
        return cls(tuple(patterns), tuple(comparisons))

    def __call__(self, tag: str) -> bool:
        if self.patterns and not any(fnmatch.fnmatchcase(tag, p) for p in self.patterns):
            return False
        if not self.comparisons:
            return True
        found = version(tag)
        return found is not None and all(
            _OPERATORS[symbol](found, bound) for symbol, bound in self.comparisons
        )


def match_names(names: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The names matching any of the shell-style patterns, sorted."""
    return sorted(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))
