"""Helpers the auth tests import: a clock moved by hand, so windows and expiries need no sleeps,
and a failed-login log in memory."""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryFailureLog:
    """auth.ratelimit.FailureLog in a dict, counting its writes."""

    def __init__(self) -> None:
        self.failures: dict[str, list[float]] = {}
        self.writes = 0

    async def record_failure(self, key: str, at: float, since: float) -> int:
        self.writes += 1
        kept = [when for when in self.failures.get(key, []) if when >= since]
        self.failures[key] = [*kept, at]
        return len(self.failures[key])

    async def failures_since(self, key: str, since: float) -> list[float]:
        return [when for when in self.failures.get(key, []) if when >= since]

    async def clear_failures(self, key: str) -> None:
        self.writes += 1
        self.failures.pop(key, None)
