"""The blob store's metrics: distribution's `registry_storage_action_seconds`, one observation per
call of a BlobStore method (storage/timed.py times every driver)."""

from __future__ import annotations

from portside.metrics.instruments import Histogram

action_seconds = Histogram(
    "registry_storage_action_seconds",
    "The number of seconds that the storage action takes",
    ("driver", "action"),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
