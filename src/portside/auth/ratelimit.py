"""Failed-login limiting per client address and per username, in a sliding window: after
`max_failures` failures within `window` seconds a key is refused until the oldest of them is
`window` seconds old, and `Retry-After` says how long that is.

State lives in this process: with several workers each counts on its own, so the effective limit
is up to `workers` times the configured one, until a shared store (the metadata database) is added.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final

DEFAULT_MAX_FAILURES: Final = 5
DEFAULT_WINDOW: Final = 60.0
DEFAULT_MAX_KEYS: Final = 100_000


class FailureWindow:
    """Failures per key within a sliding window. Memory is bounded: at most `max_keys` keys,
    the least recently failed ones forgotten first."""

    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window: float = DEFAULT_WINDOW,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window <= 0 or max_keys < 1:
            raise ValueError("max_failures, window and max_keys must be positive")
        self.max_failures = max_failures
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> times of its last max_failures failures, oldest first
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _retry_after(self, times: deque[float] | None, now: float) -> float:
        if times is None or len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window - now)

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        with self._lock:
            return self._retry_after(self._failures.get(key), self._clock())

    def failure(self, key: str) -> float:
        """Count a failure of `key`; the seconds it must now wait (0 while under the limit)."""
        with self._lock:
            now = self._clock()
            times = self._failures.pop(key, None)
            if times is None:
                times = deque(maxlen=self.max_failures)
            times.append(now)
            self._failures[key] = times
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
            return self._retry_after(times, now)

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def prune(self) -> int:
        """Forget keys whose failures are all older than the window; how many went."""
        with self._lock:
            now = self._clock()
            stale = [k for k, times in self._failures.items() if times[-1] + self.window <= now]
            for key in stale:
                del self._failures[key]
            return len(stale)


class LoginLimiter:
    """Both limits a login passes: its client address and its username.

    Ask `retry_after` before checking a password (a refused login costs no hash), then report
    the outcome. A success clears the username's failures, not the address's, so one valid account
    cannot be used to reset an address that is guessing others' passwords."""

    def __init__(
        self, per_address: FailureWindow | None = None, per_username: FailureWindow | None = None
    ) -> None:
        self.per_address = per_address
        self.per_username = per_username

    def retry_after(self, address: str, username: str | None) -> int:
        """Whole seconds to wait before trying (the `Retry-After` value); 0 when allowed."""
        wait = 0.0
        if self.per_address is not None:
            wait = self.per_address.retry_after(address)
        if self.per_username is not None and username is not None:
            wait = max(wait, self.per_username.retry_after(username))
        return math.ceil(wait)

    def failure(self, address: str, username: str | None) -> int:
        """Count a failed login; whole seconds to wait now (0 while under both limits)."""
        wait = 0.0
        if self.per_address is not None:
            wait = self.per_address.failure(address)
        if self.per_username is not None and username is not None:
            wait = max(wait, self.per_username.failure(username))
        return math.ceil(wait)

    def success(self, username: str) -> None:
        """Count a successful login: the username's failures are forgotten."""
        if self.per_username is not None:
            self.per_username.reset(username)
