"""The metrics in the Prometheus text format, through prometheus_client.

Each process's tallies (portside.metrics.instruments) are added to prometheus_client metrics by
`Exporter.flush`. Under `portside serve`, PROMETHEUS_MULTIPROC_DIR names a folder private to the
server, so prometheus_client keeps each worker's values in files there and a scrape, whichever
worker it reaches, adds up all of them (`exposition`): totals of every worker, those that
exited included, except for the `live` gauges (requests in flight), whose files go with their
process. Without the variable (in-process tests), a process exports its own values.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

# Every family is declared before the first scrape, so that a scrape lists all of them.
from portside.metrics import (  # noqa: F401
    database,
    gc,
    http,
    logins,
    notifications,
    proxy,
    storage,
)
from portside.metrics.instruments import (
    INSTRUMENTS,
    Counter,
    CounterChild,
    Gauge,
    GaugeChild,
    Histogram,
    HistogramChild,
    Instrument,
)

MULTIPROCESS_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which generate_latest writes.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# prometheus_client's files of the `live` gauges, named after the process that wrote them.
_LIVE_GAUGE_FILE: Final = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> Path | None:
    found = os.environ.get(MULTIPROCESS_VARIABLE)
    return Path(found) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: a pid reused since
        return False
    return True


def forget_exited(path: Path) -> None:
    """Drop the `live` gauges of processes that have exited (a worker granian replaced), so
    that their requests in flight at the time do not count for ever."""
    for entry in os.listdir(path):
        match = _LIVE_GAUGE_FILE.fullmatch(entry)
        if match is not None and not _alive(int(match[1])):
            with contextlib.suppress(FileNotFoundError):  # another scrape got there first
                multiprocess.mark_process_dead(int(match[1]), str(path))


def multiprocess_exposition(path: Path) -> bytes:
    """The text format of the values every process wrote under path."""
    forget_exited(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(path))
    return generate_latest(registry)


class Exporter:
    """This process's prometheus_client metrics, one per instrument, and the tallies' flush."""

    def __init__(self, instruments: list[Instrument[Any]] = INSTRUMENTS) -> None:
        self.instruments = instruments
        self.multiprocess = multiprocess_dir()
        if self.multiprocess is not None and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client picks where values live when first imported, and `portside
            # serve` imports it before it makes the folder (its workers are forked from it):
            # picked again here, before this process has made any metric.
            values.ValueClass = values.get_value_class()
        # Their _created samples exist in one process only; the multiprocess files have none.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: list[tuple[Instrument[Any], Any]] = []
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # What each child's totals were at the last flush.
        self._counted: dict[tuple[int, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[int, tuple[str, ...]], tuple[list[int], float]] = {}
        self._gauges: dict[tuple[int, tuple[str, ...]], float] = {}
        self._flushing = threading.Lock()  # the periodic flush, and a scrape's in a thread

    def flush(self) -> None:
        """Add what every instrument's totals grew by since the last flush."""
        with self._flushing:
            self._flush()

    def _flush(self) -> None:
        for instrument in self.instruments[len(self._metrics) :]:
            self._metrics.append((instrument, self._bind(instrument)))
        for index, (instrument, metric) in enumerate(self._metrics):
            for labels, child in instrument.children():
                if isinstance(child, CounterChild):
                    self._flush_counter(index, metric, labels, child)
                elif isinstance(child, HistogramChild):
                    self._flush_histogram(index, metric, labels, child)
                elif isinstance(child, GaugeChild):
                    self._flush_gauge(index, metric, labels, child)

    def exposition(self) -> bytes:
        """The text format of this process's values, or with PROMETHEUS_MULTIPROC_DIR of every
        worker's; flushes first."""
        self.flush()
        if self.multiprocess is not None:
            return multiprocess_exposition(self.multiprocess)
        return generate_latest(self.registry)

    def _bind(self, instrument: Instrument[Any]) -> Any:
        name, documentation, labels = (
            instrument.name,
            instrument.documentation,
            instrument.labelnames,
        )
        registry = self.registry if self.multiprocess is None else None
        if isinstance(instrument, Counter):
            return PromCounter(name, documentation, labels, registry=registry)
        if isinstance(instrument, Histogram):
            return PromHistogram(
                name, documentation, labels, registry=registry, buckets=instrument.buckets
            )
        if isinstance(instrument, Gauge):
            return PromGauge(
                name, documentation, labels, registry=registry, multiprocess_mode=instrument.mode
            )
        raise TypeError(f"no prometheus_client metric for {instrument!r}")

    def _child(self, index: int, metric: Any, labels: tuple[str, ...]) -> Any:
        key = (index, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels) if labels else metric
        return found

    def _flush_counter(
        self, index: int, metric: Any, labels: tuple[str, ...], child: CounterChild
    ) -> None:
        key, total = (index, labels), child.total
        grown = total - self._counted.get(key, 0.0)
        if grown:
            self._counted[key] = total
            self._child(index, metric, labels).inc(grown)

    def _flush_histogram(
        self, index: int, metric: Any, labels: tuple[str, ...], child: HistogramChild
    ) -> None:
        key = (index, labels)
        counts, total = child.snapshot()
        before, before_total = self._observed.get(key, ([0] * len(counts), 0.0))
        if counts == before:
            return
        self._observed[key] = (counts, total)
        target = self._child(index, metric, labels)
        # prometheus_client has no call to add many observations at once: its histogram keeps
        # a sum and a (non-cumulative) count per bucket, which observe() adds to one at a time.
        target._sum.inc(total - before_total)
        for bucket, count, counted in zip(target._buckets, counts, before, strict=True):
            if count != counted:
                bucket.inc(count - counted)

    def _flush_gauge(
        self, index: int, metric: Any, labels: tuple[str, ...], child: GaugeChild
    ) -> None:
        key = (index, labels)
        if self._gauges.get(key) != child.value:
            self._gauges[key] = child.value
            self._child(index, metric, labels).set(child.value)


_exporter: Exporter | None = None


def exporter() -> Exporter:
    """This process's exporter, made on first use: in a server worker, after the fork."""
    global _exporter
    if _exporter is None:
        _exporter = Exporter()
    return _exporter
