"""Garbage collection's metrics, of the runs of the process that records them: the server's
background collection (gc_interval); a `portside gc` command's run ends with its process."""

from __future__ import annotations

from portside.metrics.instruments import Counter, Histogram

runs = Counter(
    "portside_gc_runs_total",
    "Garbage collection runs, by result: success or failure.",
    ("result",),
)
freed_bytes = Counter(
    "portside_gc_freed_bytes_total",
    "Bytes of blobs and uploads that garbage collection removed.",
)
duration = Histogram(
    "portside_gc_duration_seconds",
    "How long a garbage collection run took.",
    buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600),
)
