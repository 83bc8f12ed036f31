"""Which tags `portside sync` copies: patterns and version ranges (registry/tag_filter.py)."""

from __future__ import annotations

import pytest

from portside.registry.tag_filter import InvalidFilter, TagFilter, match_names, version

TAGS = ["latest", "1", "1.2", "v1.2.3", "1.3.0", "1.10", "2.0.0", "2.0-alpine", "v3"]


@pytest.mark.parametrize(
    ("patterns", "versions", "chosen"),
    [
        ((), None, TAGS),
        (("1.*",), None, ["1.2", "1.3.0", "1.10"]),
        (("latest", "v*"), None, ["latest", "v1.2.3", "v3"]),
        ((), ">=1.2,<2", ["1.2", "v1.2.3", "1.3.0", "1.10"]),
        ((), "~1.2", ["1.2", "v1.2.3"]),
        ((), "^1.3", ["1.3.0", "1.10"]),
        ((), "==2", ["2.0.0"]),
        ((), "!=1.2, >1", ["v1.2.3", "1.3.0", "1.10", "2.0.0", "v3"]),
        (("v*",), ">=2", ["v3"]),
    ],
)
def test_tags_are_chosen_by_pattern_and_version_range(
    patterns: tuple[str, ...], versions: str | None, chosen: list[str]
) -> None:
    tags = TagFilter.parse(patterns, versions)
    assert [t for t in TAGS if tags(t)] == chosen


@pytest.mark.parametrize("versions", [">=x", "~", ">=1.2.3.4", ">=1,,<2", "=>1"])
def test_a_range_that_cannot_be_read_is_refused(versions: str) -> None:
    with pytest.raises(InvalidFilter):
        TagFilter.parse((), versions)


def test_a_blank_pattern_is_refused() -> None:
    with pytest.raises(InvalidFilter):
        TagFilter.parse(("",), None)


def test_versions_and_names() -> None:
    assert version("v1.2") == (1, 2, 0)
    assert version("1.2-rc1") is None
    assert match_names(["team/b", "team/a", "other/x"], ["team/*"]) == ["team/a", "team/b"]
