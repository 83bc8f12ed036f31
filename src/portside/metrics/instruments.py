"""Counters, histograms and gauges that tally in this process's memory, cheaply enough for the
request path: a labelled child is a dict lookup away (callers on the hot path keep it), and
recording is an addition, for a histogram after a bisect. Totals only grow: the exporter
(`portside.metrics.export`) reads them, and adds what grew since its last look to
prometheus_client's metrics, and so to its multiprocess files, in batches (once a second, and
before each scrape): one file write per labelled child and batch, not per observation.

A child is recorded to from one thread (the event loop's), unlike reads, which may come from
any: an instrument recorded to from several threads at once (metadata calls that run in worker
threads) is declared with `threads=True`, and each recording then takes a lock.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Final, Generic, Literal, TypeVar

# The metric and label name grammar of the Prometheus text format.
NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# How prometheus_client adds up a gauge's values across worker processes; `live` ones forget a
# process once it has exited.
GaugeMode = Literal[
    "livesum", "liveall", "livemax", "livemin", "livemostrecent",
    "sum", "all", "max", "min", "mostrecent",
]  # fmt: skip

C = TypeVar("C")

# Every instrument made in this process, in the order made: what export binds.
INSTRUMENTS: Final[list[Instrument[Any]]] = []


class Instrument(Generic[C]):
    """One metric family: its name, help text and label names, and a child per label values."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        catalog: list[Instrument[Any]] = INSTRUMENTS,
        threads: bool = False,
    ) -> None:
        """catalog: where export finds it (tests keep theirs apart); threads: recorded to from
        several threads at once."""
        if not NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        if bad := [label for label in labelnames if not LABEL.fullmatch(label)]:
            raise ValueError(f"invalid label names {bad} of {name}")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.threads = threads
        self._children: dict[tuple[str, ...], C] = {}
        self._lock = threading.Lock()
        catalog.append(self)

    def labels(self, *values: str) -> C:
        """The child for these label values, in the order of labelnames."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            with self._lock:
                child = self._children.setdefault(values, self._new_child())
        return child

    def children(self) -> list[tuple[tuple[str, ...], C]]:
        with self._lock:
            return list(self._children.items())

    def _new_child(self) -> C:
        raise NotImplementedError


class CounterChild:
    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.total += amount


class LockedCounterChild(CounterChild):
    __slots__ = ("_lock",)

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.total += amount


class Counter(Instrument[CounterChild]):
    """A total that only goes up. Its name ends in `_total`, as the text format asks."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        catalog: list[Instrument[Any]] = INSTRUMENTS,
        threads: bool = False,
    ) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"a counter's name ends in _total: {name}")
        super().__init__(name, documentation, labelnames, catalog, threads)

    def _new_child(self) -> CounterChild:
        return LockedCounterChild() if self.threads else CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        """For a counter without labels."""
        self.labels().inc(amount)


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, as a Prometheus bucket's `le` counts it.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """The counts per bucket and the sum so far (read while a recording goes on in
        another thread, the sum may be one observation ahead or behind: the next read agrees)."""
        return list(self.counts), self.sum


class LockedHistogramChild(HistogramChild):
    __slots__ = ("_lock",)

    def __init__(self, bounds: tuple[float, ...]) -> None:
        super().__init__(bounds)
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect_left(self.bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.sum += value

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self.counts), self.sum


class Histogram(Instrument[HistogramChild]):
    """Observations counted into buckets by upper bound (`le`), and their sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        catalog: list[Instrument[Any]] = INSTRUMENTS,
        threads: bool = False,
    ) -> None:
        if not buckets or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"the buckets of {name} must be increasing: {buckets}")
        self.buckets = tuple(float(bound) for bound in buckets)
        super().__init__(name, documentation, labelnames, catalog, threads)

    def _new_child(self) -> HistogramChild:
        if self.threads:
            return LockedHistogramChild(self.buckets)
        return HistogramChild(self.buckets)

    def observe(self, value: float) -> None:
        """For a histogram without labels."""
        self.labels().observe(value)


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class Gauge(Instrument[GaugeChild]):
    """A value that goes up and down, recorded to from one thread; `mode` says how the values
    of worker processes add up."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        mode: GaugeMode,
        catalog: list[Instrument[Any]] = INSTRUMENTS,
    ) -> None:
        self.mode = mode
        super().__init__(name, documentation, labelnames, catalog)

    def _new_child(self) -> GaugeChild:
        return GaugeChild()
