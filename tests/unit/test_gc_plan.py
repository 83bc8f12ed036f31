"""Garbage collection's pure parts: the settings' durations, and what registry.gc.plan calls
garbage in a snapshot (the definition in registry/gc.py's docstring, case by case)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from portside.config.loader import ConfigError, describe, load_settings
from portside.metadata.base import (
    BlobRecord,
    BlobState,
    LinkRecord,
    ManifestRecord,
    ReferenceKind,
    ReferenceRecord,
    ReservationRecord,
    Snapshot,
    TagRecord,
    Upload,
)
from portside.registry import keys
from portside.registry.gc import Plan, Policy, plan
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


# what plan() calls garbage


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def bytes_of(name: str, size: int = 10, modified: datetime = OLD) -> ObjectInfo:
    return ObjectInfo(keys.blob(Digest.parse(digest(name))), size, modified)


class Graph:
    """A snapshot built one record at a time, by names that stand for digests."""

    def __init__(self) -> None:
        self.manifests: list[ManifestRecord] = []
        self.tags: list[TagRecord] = []
        self.references: list[ReferenceRecord] = []
        self.links: list[LinkRecord] = []
        self.blobs: list[BlobRecord] = []
        self.reservations: list[ReservationRecord] = []
        self.uploads: list[Upload] = []

    def blob(self, name: str, repository: str | None = "app", at: datetime = OLD) -> None:
        self.blobs.append(BlobRecord(digest(name), 10, BlobState.STORED, at))
        if repository is not None:
            self.links.append(LinkRecord(repository, digest(name), at))

    def manifest(
        self,
        name: str,
        *,
        tag: str | None = None,
        blobs: tuple[str, ...] = (),
        children: tuple[str, ...] = (),
        subject: str | None = None,
        at: datetime = OLD,
    ) -> None:
        self.blob(name, at=at)
        self.manifests.append(ManifestRecord("app", digest(name), subject and digest(subject), at))
        if tag is not None:
            self.tags.append(TagRecord("app", tag, digest(name)))
        for kind, names in ((ReferenceKind.BLOB, blobs), (ReferenceKind.MANIFEST, children)):
            for child in names:
                self.references.append(ReferenceRecord("app", digest(name), digest(child), kind))

    def plan(self, objects: list[ObjectInfo] | None = None, **policy: object) -> Plan:
        snapshot = Snapshot(
            tuple(self.manifests),
            tuple(self.tags),
            tuple(self.references),
            tuple(self.links),
            tuple(self.blobs),
            tuple(self.reservations),
            tuple(self.uploads),
        )
        blob_objects = [o for o in objects or [] if o.key.startswith("blobs/")]
        upload_objects = [o for o in objects or [] if o.key.startswith("uploads/")]
        return plan(snapshot, blob_objects, upload_objects, Policy(**policy), NOW)  # type: ignore[arg-type]


def names(digests: object) -> set[str]:
    lookup = {digest(n): n for n in "abcdefghijklmnopqrstuvwxyz"} | {
        digest(n): n for n in ("config", "layer", "shared", "index", "sig", "old", "new")
    }
    return {lookup[d] for d in digests}  # type: ignore[attr-defined]


def test_with_keep_no_manifest_is_garbage_and_what_they_reference_stays() -> None:
    graph = Graph()
    graph.blob("config")
    graph.blob("layer")
    graph.manifest("old", blobs=("config", "layer"))  # untagged
    assert graph.plan(untagged="keep") == Plan()


def test_with_collect_untagged_old_manifests_go_with_what_only_they_reference() -> None:
    graph = Graph()
    for name in ("config", "layer", "shared"):
        graph.blob(name)
    graph.manifest("old", blobs=("config", "layer", "shared"))
    graph.manifest("new", tag="latest", blobs=("shared",))
    planned = graph.plan(untagged="collect")
    assert names(planned.manifests["app"]) == {"old"}
    assert names(planned.links["app"]) == {"config", "layer"}
    assert names(planned.blobs) == {"old", "config", "layer"}


def test_with_collect_the_young_and_what_they_reach_stay() -> None:
    graph = Graph()
    graph.manifest("a")
    graph.manifest("index", children=("a",), at=YOUNG)
    graph.manifest("sig", subject="a")
    assert graph.plan(untagged="collect") == Plan()


def test_with_collect_children_and_referrers_of_kept_manifests_stay() -> None:
    graph = Graph()
    for name in ("a", "b", "c", "d"):
        graph.manifest(name)
    graph.manifest("index", tag="multi", children=("a", "b"))
    graph.manifest("sig", subject="a")  # of a kept child: kept
    graph.manifest("e", subject="c")  # of a garbage manifest: garbage too
    graph.manifest("f", subject="gone")  # of no manifest: garbage
    planned = graph.plan(untagged="collect")
    assert names(planned.manifests["app"]) == {"c", "d", "e", "f"}


def test_links_go_when_unreferenced_and_old_unless_they_are_a_manifest() -> None:
    graph = Graph()
    graph.blob("a")  # pushed long ago, never referenced
    graph.blob("b", at=YOUNG)  # a push in progress
    graph.blob("c")
    graph.manifest("m", tag="v1", blobs=("c",))
    planned = graph.plan()
    assert names(planned.links["app"]) == {"a"}
    assert names(planned.blobs) == {"a"}
    assert names(graph.plan(grace_period=timedelta(days=3)).links.get("app", [])) == set()


def test_blobs_in_use_elsewhere_reserved_or_freshly_marked_stay() -> None:
    graph = Graph()
    graph.blob("a", repository=None)
    graph.links.append(LinkRecord("other", digest("a"), YOUNG))  # pushed there just now
    graph.blob("b", repository=None)  # linked nowhere: garbage
    graph.blob("c", repository=None)
    graph.reservations.append(ReservationRecord(digest("c"), YOUNG))  # a writer is storing it
    graph.blob("d", repository=None)
    graph.reservations.append(ReservationRecord(digest("d"), OLD))  # its writer died
    graph.blobs.append(BlobRecord(digest("e"), 1, BlobState.DELETING, OLD, NOW))  # being deleted
    graph.blobs.append(BlobRecord(digest("f"), 1, BlobState.DELETING, OLD, OLD))  # abandoned
    graph.blobs.append(BlobRecord(digest("g"), 1, BlobState.PENDING, OLD))  # a dead writer's
    graph.manifest("m", tag="v1", blobs=("h",))  # references h, which another unlinked
    graph.blob("h", repository=None)
    planned = graph.plan(objects=[bytes_of("b", 7)])
    assert names(planned.blobs) == {"b", "d", "f", "g"}
    assert planned.blobs[digest("b")] == 7  # the bytes storage holds, not the record's size
    assert planned.reservations == 1


def test_bytes_without_a_record_go_once_older_than_the_grace_period() -> None:
    graph = Graph()
    graph.blob("a")
    objects = [
        bytes_of("a"),  # recorded
        bytes_of("b"),  # an orphan
        bytes_of("c", modified=YOUNG),  # being recorded, maybe
        ObjectInfo("blobs/sha256/zz/not-a-digest", 5, OLD),  # not the registry's: left alone
    ]
    planned = graph.plan(objects=objects)
    assert names(planned.orphans) == {"b"}


def test_expired_sessions_go_with_their_objects_and_strays_once_old() -> None:
    graph = Graph()
    live, idle, gone = "1" * 32, "2" * 32, "3" * 32
    for upload_id, at in ((live, YOUNG), (idle, OLD)):
        graph.uploads.append(Upload(upload_id, "app", 5, 0, None, OLD, at))
    objects = [
        ObjectInfo(keys.upload(live), 5, YOUNG),
        ObjectInfo(keys.upload(idle), 5, OLD),
        ObjectInfo(keys.upload_part(idle, "a" * 32), 3, YOUNG),
        ObjectInfo(keys.upload_part(gone, "b" * 32), 4, OLD),  # a dead request's chunk
        ObjectInfo(keys.upload_part(gone, "c" * 32), 4, YOUNG),  # a single POST in progress
        ObjectInfo("uploads/readme", 1, OLD),
    ]
    planned = graph.plan(objects=objects, upload_expiry=HOUR)
    assert {upload_id: len(found) for upload_id, found in planned.uploads.items()} == {idle: 2}
    assert planned.strays == {keys.upload_part(gone, "b" * 32): 4}
    summary = planned.summary()
    assert (summary.uploads, summary.upload_bytes, summary.strays) == (1, 8, 1)
