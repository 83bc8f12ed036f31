"""A circuit breaker: after a run of failures, fail fast for a while instead of waiting on an
upstream that is down, then let one trial call through to see whether it is back."""

from __future__ import annotations

import logging
from collections.abc import Callable

from portside.upstream.errors import UpstreamUnavailable

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed: calls go through. After `failure_threshold` consecutive failures it opens: calls
    fail for `open_seconds`. Then it is half-open: one trial call goes through (others still fail
    fast); its success closes the circuit, its failure opens it again."""

    def __init__(
        self, failure_threshold: int, open_seconds: float, clock: Callable[[], float]
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self.last_error: str | None = None

    @property
    def available(self) -> bool:
        """False from the moment the circuit opens until a call succeeds again."""
        return self._opened_at is None

    def before_call(self) -> None:
        """Raises UpstreamUnavailable while open, or while another call is the trial."""
        if self._opened_at is None:
            return
        remaining = self._opened_at + self.open_seconds - self._clock()
        if remaining > 0 or self._trial:
            raise UpstreamUnavailable(
                f"circuit open: {self.last_error}", retry_after=max(remaining, 0.0)
            )
        self._trial = True

    def succeeded(self) -> None:
        if self._opened_at is not None:
            log.info("upstream circuit closed: the upstream answers again")
        self._failures, self._opened_at, self._trial = 0, None, False

    def failed(self, error: str) -> None:
        self.last_error = error
        self._failures += 1
        if self._trial or self._failures >= self.failure_threshold:
            if not self._trial:
                log.warning("upstream circuit open for %ss: %s", self.open_seconds, error)
            self._opened_at, self._trial = self._clock(), False

    def abandoned(self) -> None:
        """A call ended without telling whether the upstream works (cancelled, or a bug): the
        next call may be the trial."""
        self._trial = False
