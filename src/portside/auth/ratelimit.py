"""Failed-login limiting per client address and per username, in a sliding window: after
`max_failures` failures within `window` seconds a key is refused until the oldest of them that
counts is `window` seconds old, and `Retry-After` says how long that is.

The failures live in a FailureLog that every worker and instance shares (server/throttle.py puts
it in the metadata database), so that N of them limit as one. Keys are hashed before they are
stored: a username that failed may be a password typed in the wrong field.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

DEFAULT_MAX_FAILURES: Final = 5
DEFAULT_WINDOW: Final = 60.0


class FailureLog(Protocol):
    """Failures by key (at most 64 characters), at times in seconds since the epoch."""

    async def record_failure(self, key: str, at: float, since: float) -> int:
        """Record a failure of key at `at`; how many it has had since `since`, this one too."""

    async def failures_since(self, key: str, since: float) -> list[float]:
        """When key failed since `since`, the earliest first."""

    async def clear_failures(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a login stands before its password is checked."""

    retry_after: int  # whole seconds to wait (the `Retry-After` value); 0: it may try now
    username_failed: bool  # the username has failures in the window, which a success clears


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode("utf-8", "surrogatepass")).hexdigest()


class LoginLimiter:
    """Both limits a login passes: its client address and its username.

    Ask `standing` before checking a password (a refused login costs no hash), then report a
    failure, or a success where the username had failures. A success clears the username's
    failures, not the address's, so one valid account cannot be used to reset an address that is
    guessing others' passwords. A success costs no write unless there were failures to clear."""

    def __init__(
        self,
        log: FailureLog,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window: float = DEFAULT_WINDOW,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_failures < 1 or window <= 0:
            raise ValueError("max_failures and window must be positive")
        self.log = log
        self.max_failures = max_failures
        self.window = window
        self._clock = clock

    async def standing(self, address: str, username: str) -> Standing:
        now = self._clock()
        since = now - self.window
        by_address = await self.log.failures_since(_key("address", address), since)
        by_username = await self.log.failures_since(_key("username", username), since)
        wait = max(self._wait(by_address, now), self._wait(by_username, now))
        return Standing(math.ceil(wait), bool(by_username))

    def _wait(self, failures: list[float], now: float) -> float:
        """Seconds until fewer than max_failures of these are in the window."""
        if len(failures) < self.max_failures:
            return 0.0
        return max(0.0, failures[len(failures) - self.max_failures] + self.window - now)

    async def failure(self, address: str, username: str) -> None:
        now = self._clock()
        since = now - self.window
        await self.log.record_failure(_key("address", address), now, since)
        await self.log.record_failure(_key("username", username), now, since)

    async def success(self, username: str) -> None:
        """The username logged in: its failures are forgotten."""
        await self.log.clear_failures(_key("username", username))
