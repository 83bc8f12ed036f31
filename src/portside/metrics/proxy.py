"""The pull-through cache's metrics: distribution's `registry_proxy_*`, with `type` blob or
manifest, and Portside's count of each outcome. A hit ratio is hits over requests:

    sum(rate(registry_proxy_hits_total[5m])) / sum(rate(registry_proxy_requests_total[5m]))
"""

from __future__ import annotations

from portside.metrics.instruments import Counter

requests = Counter(
    "registry_proxy_requests_total",
    "The number of total incoming proxy request received",
    ("type",),
)
hits = Counter(
    "registry_proxy_hits_total",
    "The number of total proxy request hits (served from what the cache holds)",
    ("type",),
)
misses = Counter(
    "registry_proxy_misses_total",
    "The number of total proxy request misses (fetched from the upstream)",
    ("type",),
)
pulled_bytes = Counter(
    "registry_proxy_pulled_bytes_total",
    "The size of total bytes pulled from the upstream",
    ("type",),
)
pushed_bytes = Counter(
    "registry_proxy_pushed_bytes_total",
    "The size of total bytes pushed to the client",
    ("type",),
)
outcomes = Counter(
    "portside_proxy_outcomes_total",
    "Cache requests by outcome: hit, miss, revalidated (a held manifest the upstream confirmed) "
    "or stale (a held manifest served while the upstream was unreachable).",
    ("type", "outcome"),
)
