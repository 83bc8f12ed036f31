"""What can go wrong talking to an upstream registry; the caller maps each to a spec error."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of the errors an Upstream raises."""


class UpstreamUnavailable(UpstreamError):
    """Not reachable now: connect error, timeout, 5xx, 429, or the circuit is open. `retry_after`
    is the seconds the upstream (or the open circuit) asks us to wait, when known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamNotFound(UpstreamError):
    """The upstream has no such repository, manifest, blob or tag (404, or a *_UNKNOWN code)."""


class UpstreamDenied(UpstreamError):
    """The upstream refuses us (401 or 403) even after authenticating as configured."""


class UpstreamInvalid(UpstreamError):
    """The upstream broke the protocol: a digest that does not match, a manifest over the size
    limit, an unusable challenge, token or redirect."""
