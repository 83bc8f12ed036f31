"""The HTTP server's metrics. The `registry_http_*` ones are distribution's, with its names,
labels and buckets (docker/go-metrics' NewDefaultHttpMetrics), so that its dashboards work;
`handler` is the name of the route (api/routes.py), `unmatched` for a path no route serves."""

from __future__ import annotations

from typing import Final

from portside.metrics.instruments import Counter, Gauge, Histogram

DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60)
SIZE_BUCKETS: Final = tuple(1024 * 2**power for power in range(22))  # 1 KiB to 2 GiB

requests = Counter(
    "registry_http_requests_total",
    "Total number of HTTP requests made.",
    ("handler", "method", "code"),
)
duration = Histogram(
    "registry_http_request_duration_seconds",
    "The HTTP request latencies in seconds.",
    ("handler", "method"),
    buckets=DURATION_BUCKETS,
)
request_size = Histogram(
    "registry_http_request_size_bytes",
    "The HTTP request sizes in bytes (of their bodies).",
    ("handler",),
    buckets=SIZE_BUCKETS,
)
response_size = Histogram(
    "registry_http_response_size_bytes",
    "The HTTP response sizes in bytes (of their bodies).",
    ("handler",),
    buckets=SIZE_BUCKETS,
)
in_flight = Gauge(
    "registry_http_in_flight_requests",
    "The in-flight HTTP requests",
    ("handler",),
    mode="livesum",
)

# Portside's own. The byte counters grow as bodies flow, not when a request ends (as the size
# histograms do), so that their rate shows the traffic of a long push or pull while it lasts.
received = Counter(
    "portside_http_received_bytes_total",
    "Bytes of request bodies received, counted as they arrive.",
    ("handler",),
)
sent = Counter(
    "portside_http_sent_bytes_total",
    "Bytes of response bodies sent, counted as they leave (a file sent whole at once).",
    ("handler",),
)
uploads_in_progress = Gauge(
    "portside_uploads_in_progress",
    "Requests bringing blob bytes to an upload session (its POST, PATCH or PUT) being served "
    "now: what a drained instance waits for before it stops.",
    mode="livesum",
)
