"""Metrics of logins with a username and password (Basic credentials, and the token service's)."""

from __future__ import annotations

from portside.metrics.instruments import Counter

failures = Counter(
    "portside_login_failures_total",
    "Logins refused for an unknown user or a wrong password.",
)
throttled = Counter(
    "portside_login_throttled_total",
    "Logins refused unchecked: too many failed logins from the address or for the username.",
)
