"""portside.metrics: the in-memory tallies, and their export through prometheus_client, in one
process and in multiprocess mode (a folder of files per process, added up by a scrape)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Histogram as PromHistogram
from prometheus_client.parser import text_string_to_metric_families

from portside.metrics.export import MULTIPROCESS_VARIABLE, Exporter, forget_exited
from portside.metrics.instruments import Counter, Gauge, Histogram, Instrument
from scrapes import samples, value


@pytest.fixture
def catalog() -> list[Instrument[Any]]:
    """Instruments of the test alone, out of the process's exporter."""
    return []


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_VARIABLE, raising=False)


def test_counter_adds_up_per_label_values(catalog: list[Instrument[Any]]) -> None:
    counter = Counter("t_requests_total", "t", ("code",), catalog=catalog)
    counter.labels("200").inc()
    counter.labels("200").inc(2)
    counter.labels("404").inc()
    exporter = Exporter(catalog)

    found = samples(exporter.exposition())

    assert value(found, "t_requests_total", code="200") == 3
    assert value(found, "t_requests_total", code="404") == 1


def test_a_flush_adds_only_what_was_counted_since_the_last(catalog: list[Instrument[Any]]) -> None:
    counter = Counter("t_total", "t", catalog=catalog)
    exporter = Exporter(catalog)
    counter.inc(5)
    exporter.flush()
    exporter.flush()
    counter.inc()

    assert value(samples(exporter.exposition()), "t_total") == 6


def test_histogram_flushed_in_a_batch_reads_as_if_observed_one_by_one(
    catalog: list[Instrument[Any]],
) -> None:
    bounds = (0.1, 1.0, 10.0)
    observed = [0.05, 0.1, 0.1000001, 1.0, 3.0, 10.0, 11.0, 1e9]
    ours = Histogram("t_seconds", "t", ("kind",), buckets=bounds, catalog=catalog)
    registry = CollectorRegistry()
    theirs = PromHistogram("t_seconds", "t", ("kind",), buckets=bounds, registry=registry)
    for seconds in observed:
        ours.labels("read").observe(seconds)
        theirs.labels("read").observe(seconds)

    exported = samples(Exporter(catalog).exposition())
    expected = samples(generate_latest(registry))

    assert {k: v for k, v in exported.items() if not k[0].endswith("_created")} == {
        k: v for k, v in expected.items() if not k[0].endswith("_created")
    }
    # `le` is inclusive: an observation equal to a bound is counted in its bucket.
    assert value(exported, "t_seconds_bucket", kind="read", le="0.1") == 2


def test_gauge_exports_its_current_value(catalog: list[Instrument[Any]]) -> None:
    gauge = Gauge("t_in_flight", "t", ("handler",), mode="livesum", catalog=catalog)
    exporter = Exporter(catalog)
    gauge.labels("blob").inc()
    gauge.labels("blob").inc()
    exporter.flush()
    gauge.labels("blob").dec()

    assert value(samples(exporter.exposition()), "t_in_flight", handler="blob") == 1


def test_counts_from_many_threads_are_all_kept(catalog: list[Instrument[Any]]) -> None:
    counter = Counter("t_total", "t", catalog=catalog, threads=True)
    histogram = Histogram("t_seconds", "t", buckets=(1.0,), catalog=catalog, threads=True)
    exporter = Exporter(catalog)

    def work() -> None:
        for _ in range(20_000):
            counter.inc()
            histogram.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(20):  # flushes while the threads count
        exporter.flush()
    for thread in threads:
        thread.join()

    found = samples(exporter.exposition())
    assert value(found, "t_total") == 80_000
    assert value(found, "t_seconds_count") == 80_000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c: Counter("t_requests", "t", catalog=c), "ends in _total"),
        (lambda c: Counter("t-x_total", "t", catalog=c), "invalid metric name"),
        (lambda c: Counter("t_total", "t", ("le-x",), catalog=c), "invalid label names"),
        (lambda c: Histogram("t", "t", buckets=(2, 1), catalog=c), "must be increasing"),
        (lambda c: Histogram("t", "t", buckets=(), catalog=c), "must be increasing"),
    ],
)
def test_bad_declarations_fail_at_once(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make([])


def test_labels_must_match_the_label_names(catalog: list[Instrument[Any]]) -> None:
    counter = Counter("t_total", "t", ("handler", "code"), catalog=catalog)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("blob")


def test_every_portside_metric_passes_the_exposition_parser() -> None:
    from portside.metrics.export import exporter

    families = {family.name for family in text_string_to_metric_families(
        exporter().exposition().decode()
    )}  # fmt: skip

    assert {
        "registry_http_requests",
        "registry_http_request_duration_seconds",
        "registry_http_request_size_bytes",
        "registry_http_response_size_bytes",
        "registry_http_in_flight_requests",
        "registry_storage_action_seconds",
        "registry_proxy_hits",
        "registry_proxy_misses",
        "registry_proxy_pulled_bytes",
        "portside_uploads_in_progress",
        "portside_metadata_query_seconds",
        "portside_login_failures",
        "portside_gc_runs",
    } <= families


# Multiprocess mode: what `portside serve` sets up for its workers -------------------------------

WORKER = """
import sys
from portside.metrics import http
from portside.metrics.export import exporter
http.requests.labels("base", "GET", "200").inc(int(sys.argv[1]))
http.in_flight.labels("blob").inc()
exporter().flush()
print(exporter().exposition().decode())
"""


def run_worker(folder: Path, count: int) -> str:
    env = {**os.environ, MULTIPROCESS_VARIABLE: str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(count)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_a_scrape_adds_up_every_process_and_forgets_the_live_gauges_of_exited_ones(
    tmp_path: Path,
) -> None:
    run_worker(tmp_path, 3)
    found = samples(run_worker(tmp_path, 4))

    # Counters of an exited process still count: totals never go down when a worker is replaced.
    assert (
        value(found, "registry_http_requests_total", handler="base", method="GET", code="200") == 7
    )
    # Requests in flight in an exited process do not: only the scraping process's one remains.
    assert value(found, "registry_http_in_flight_requests", handler="blob") == 1


def test_forget_exited_keeps_the_files_of_live_processes(tmp_path: Path) -> None:
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / "gauge_livesum_999999999.db").write_bytes(b"")
    (tmp_path / "counter_999999999.db").write_bytes(b"")

    forget_exited(tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "counter_999999999.db",
        f"gauge_livesum_{os.getpid()}.db",
    ]


def test_the_serve_process_does_not_decide_the_workers_value_class_early() -> None:
    """`portside serve` imports prometheus_client before it makes the workers' folder: the
    exporter of a forked worker must still write files."""
    script = """
import os, tempfile
import portside.cli  # what `portside serve` imports first
from prometheus_client import values
assert not values.ValueClass._multiprocess
folder = tempfile.mkdtemp()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
pid = os.fork()
if pid == 0:
    from portside.metrics import http
    from portside.metrics.export import exporter
    http.requests.labels("base", "GET", "200").inc()
    exporter().flush()
    os._exit(0)
os.waitpid(pid, 0)
print(sorted(os.listdir(folder)))
"""
    env = {k: v for k, v in os.environ.items() if k != MULTIPROCESS_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "counter_" in done.stdout
