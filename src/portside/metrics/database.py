"""The metadata database's metrics."""

from __future__ import annotations

from portside.metrics.instruments import Histogram

query_seconds = Histogram(
    "portside_metadata_query_seconds",
    "Time of a metadata query (one transaction of one or more SQL statements), from taking a "
    "pooled connection to its commit, by kind: read or write.",
    ("kind",),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    threads=True,  # PostgreSQL's queries run in worker threads
)
