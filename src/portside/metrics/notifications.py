"""The notification couriers' metrics, with distribution's names and labels (`to`: the
endpoint's name from the config, a small fixed set). Pending is what the courier read from the
outbox and has not delivered yet, up to one read (100 events): it grows while an endpoint is
down, and falls to 0 once the courier is through.
"""

from __future__ import annotations

from portside.metrics.instruments import Counter, Gauge

events = Counter(
    "registry_notifications_events_total",
    "The number of total events, by type: Events (sent, in requests that succeeded or not), "
    "Successes, Failures (answered other than 2xx or 3xx) and Errors (no answer)",
    ("type", "to"),
)
status = Counter(
    "registry_notifications_status_total",
    "The number of delivery requests by the endpoint's HTTP status code",
    ("code", "to"),
)
pending = Gauge(
    "registry_notifications_pending",
    "The events read from the outbox and not delivered yet (up to one read of 100)",
    ("to",),
    mode="mostrecent",
)
