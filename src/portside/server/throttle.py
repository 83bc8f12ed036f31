"""The failed-login log in the metadata database: auth/ratelimit.py's FailureLog over the
ThrottleStore that every worker and every instance shares, so that they limit logins as one (auth
and metadata are one layer and know nothing of each other; the server joins them here)."""

from __future__ import annotations

from datetime import UTC, datetime

from portside.metadata.base import ThrottleStore


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class MetadataFailureLog:
    """auth.ratelimit.FailureLog over a ThrottleStore."""

    def __init__(self, metadata: ThrottleStore) -> None:
        self.metadata = metadata

    async def record_failure(self, key: str, at: float, since: float) -> int:
        return await self.metadata.record_failure(key, _when(at), _when(since))

    async def failures_since(self, key: str, since: float) -> list[float]:
        found = await self.metadata.failures_since(key, _when(since))
        return [when.timestamp() for when in found]

    async def clear_failures(self, key: str) -> None:
        await self.metadata.clear_failures(key)
