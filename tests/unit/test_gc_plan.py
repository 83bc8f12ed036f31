"""Garbage collection's pure parts: the settings' durations, and what registry.gc decides from
the candidates the store reads (the definition in registry/gc.py's docstring; the store's
queries for the rest are in the contract suite)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portside.config.loader import ConfigError, describe, load_settings
from portside.metadata.base import ManifestCandidate as Candidate
from portside.registry import keys
from portside.registry.gc import garbage_manifests, orphans
from portside.registry.names import Digest
from portside.storage.base import ObjectInfo

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=2)
YOUNG = NOW - timedelta(minutes=1)
HOUR = timedelta(hours=1)

# settings


def settings_with(tmp_path: Path, lines: str) -> object:
    path = tmp_path / "config.yml"
    path.write_text(f"dev:\n    {lines}\n")
    return load_settings(path, "dev", environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("1h", HOUR),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
        ("600", timedelta(minutes=10)),
        ("0", timedelta(0)),
        ("PT2H", timedelta(hours=2)),
    ],
)
def test_durations_take_a_unit_or_seconds(tmp_path: Path, text: str, expected: timedelta) -> None:
    settings = settings_with(tmp_path, f"gc_grace_period: '{text}'\n    upload_expiry: {text}")
    assert settings.gc_grace_period == settings.upload_expiry == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("gc_grace_period: 5x", "expected a duration such as 90s, 30m, 1h or 2d"),
        ("gc_grace_period: -1", "a duration cannot be negative"),
        ("upload_expiry: true", "expected a duration"),
        ("gc_interval: 0s", "longer than 0s"),
        ("gc_untagged: drop", "'keep' or 'collect'"),
    ],
)
def test_bad_gc_settings_are_reported(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(f"dev:\n    {line}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, "dev", environ={})
    assert fragment in str(error.value)


def test_gc_settings_default_and_read_back_as_written(tmp_path: Path) -> None:
    defaults = settings_with(tmp_path, "issue: x")
    assert (
        defaults.gc_grace_period,  # type: ignore[attr-defined]
        defaults.gc_untagged,  # type: ignore[attr-defined]
        defaults.upload_expiry,  # type: ignore[attr-defined]
        defaults.gc_interval,  # type: ignore[attr-defined]
    ) == (HOUR, "keep", timedelta(days=1), None)
    settings = settings_with(tmp_path, "gc_interval: 90m\n    gc_grace_period: 45s")
    described = describe(settings)  # type: ignore[arg-type]
    assert "gc_interval: 90m" in described
    assert "gc_grace_period: 45s" in described
    assert "upload_expiry: 1d" in described


# what the collector decides in Python: which candidates are garbage, which bytes are orphans


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def candidate(name: str, parents: tuple[str, ...] = (), subject: str | None = None) -> Candidate:
    return Candidate(
        "app",
        digest(name),
        subject and digest(subject),
        tuple(digest(parent) for parent in parents),
        (),
    )


def names(digests: object) -> set[str]:
    lookup = {digest(n): n for n in "abcdefghijklmnopqrstuvwxyz"}
    return {lookup[d] for d in digests}  # type: ignore[attr-defined]


def test_candidates_that_nothing_staying_needs_are_garbage() -> None:
    """A candidate's parent or subject that is no candidate stays (it is tagged, young, or
    needed directly by what is): so does the candidate, and what it needs in turn."""
    found = [
        candidate("a"),  # loose
        candidate("b", parents=("x",)),  # the child of an index that stays
        candidate("c", parents=("b",)),  # the child of b: stays through it
        candidate("d", subject="c"),  # a referrer of c: stays through it
        candidate("e", parents=("f",)),  # f is garbage, so e is
        candidate("f"),
        candidate("g", subject="e"),  # the referrer of garbage
        candidate("h", parents=("i",)),  # a cycle reaching nothing that stays
        candidate("i", parents=("h",)),
    ]
    assert names(garbage_manifests(found)) == {"a", "e", "f", "g", "h", "i"}


def bytes_of(name: str, size: int = 10, modified: datetime = OLD) -> ObjectInfo:
    return ObjectInfo(keys.blob(Digest.parse(digest(name))), size, modified)


def test_bytes_without_a_record_go_once_older_than_the_grace_period() -> None:
    objects = [
        bytes_of("a"),  # recorded
        bytes_of("b", 7),  # an orphan
        bytes_of("c", modified=YOUNG),  # being recorded, maybe
        ObjectInfo("blobs/sha256/zz/not-a-digest", 5, OLD),  # not the registry's: left alone
    ]
    assert orphans(objects, {digest("a")}, NOW - HOUR) == {digest("b"): 7}
