"""registry/health.py with stores that fail, hang or count their calls: what each check reports,
and that probes are reused for cache_seconds and shared by concurrent checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from portside.registry.health import Health, HealthPolicy
from portside.storage.filesystem import FilesystemBlobStore


class Metadata:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    async def repository_exists(self, repository: str) -> bool:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return False


class Storage(FilesystemBlobStore):
    """A real store whose put can fail or stall, counting its calls."""

    def __init__(self, root: Path, error: Exception | None = None, stall: float = 0) -> None:
        super().__init__(root)
        self.error, self.stall, self.puts = error, stall, 0

    async def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        await asyncio.sleep(self.stall)
        if self.error is not None:
            raise self.error
        await super().put(key, data)


class Upstream:
    def __init__(self, available: bool) -> None:
        self.available = available
        self.last_error = None if available else "connect timeout"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(storage: Any, metadata: Any, clock: Clock | None = None, **policy: Any) -> Health:
    return Health(storage, metadata, HealthPolicy(**policy), clock=clock or Clock())


async def test_all_well_is_an_empty_report_and_leaves_no_probe_behind(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    report = await health(storage, Metadata()).report()

    assert report.healthy
    assert (report.failures, report.notes) == ({}, {})
    assert [key async for key in storage.list("health")] == []


async def test_a_failing_storage_and_database_are_named_with_their_errors(tmp_path: Path) -> None:
    storage = Storage(tmp_path, error=PermissionError(13, "Permission denied"))
    metadata = Metadata(error=ConnectionError("connection refused"))

    report = await health(storage, metadata).report()

    assert not report.healthy
    assert report.failures == {
        "storage": "PermissionError: [Errno 13] Permission denied",
        "database": "ConnectionError: connection refused",
    }
    assert (await health(storage, metadata).readiness()).failures == report.failures


async def test_a_probe_that_stalls_fails_at_the_timeout(tmp_path: Path) -> None:
    report = await health(Storage(tmp_path, stall=5), Metadata(), timeout_seconds=0.05).report()

    assert report.failures == {"storage": "no answer within 0.05s"}


async def test_probes_are_reused_for_cache_seconds_and_shared_by_concurrent_checks(
    tmp_path: Path,
) -> None:
    storage, metadata, clock = Storage(tmp_path, stall=0.05), Metadata(), Clock()
    checks = health(storage, metadata, clock, cache_seconds=5)

    await asyncio.gather(*(checks.report() for _ in range(10)))
    clock.now += 4.9
    await checks.readiness()
    assert (storage.puts, metadata.calls) == (1, 1)

    clock.now += 0.2
    await checks.report()
    assert (storage.puts, metadata.calls) == (2, 2)


async def test_upstreams_that_do_not_answer_are_reported_without_failing(
    tmp_path: Path,
) -> None:
    upstreams = {"https://ghcr.io": Upstream(True), "https://quay.io": Upstream(False)}
    checks = Health(Storage(tmp_path), Metadata(), HealthPolicy(), upstreams, Clock())

    report = await checks.report()

    assert report.healthy
    assert report.notes == {"upstream https://quay.io": "unavailable: connect timeout"}


@pytest.mark.parametrize(("minimum", "failing"), [(0, False), (1, False), (1 << 60, True)])
async def test_free_space_below_the_minimum_fails(
    tmp_path: Path, minimum: int, failing: bool
) -> None:
    checks = health(Storage(tmp_path), Metadata(), free_space_path=tmp_path, min_free_space=minimum)

    report = await checks.report()

    assert ("disk" in report.failures) is failing


async def test_an_unreadable_disk_is_a_failure_too(tmp_path: Path) -> None:
    checks = health(
        Storage(tmp_path), Metadata(), free_space_path=tmp_path / "gone", min_free_space=1
    )

    report = await checks.report()

    assert report.failures["disk"].startswith(f"cannot read the free space of {tmp_path / 'gone'}")
