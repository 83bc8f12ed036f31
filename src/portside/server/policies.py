"""The registry's policies as the server and the CLI build them from the settings: immutable
tags and quotas for the request path, retention for the collector, and the task that writes
when tags were pulled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from portside.config.settings import Settings
from portside.registry.immutability import ImmutableTags
from portside.registry.policies import Policies
from portside.registry.pull_times import PullTimes
from portside.registry.quotas import QuotaStore
from portside.registry.retention import Retention, RetentionStore
from portside.server.notifications import change_recorder


def build_policies(settings: Settings, metadata: QuotaStore) -> Policies:
    return Policies.build(settings.policies, metadata)


def build_retention(settings: Settings, metadata: RetentionStore) -> Retention | None:
    """The retention rules, for the collector; None without any."""
    policies = settings.policies
    if not policies.retention:
        return None
    audited = settings.audit is not None and settings.audit.enabled
    immutable = ImmutableTags(policies.immutable_tags)
    events = change_recorder(settings)
    return Retention(policies.retention, metadata, immutable, audited, events)


@contextlib.asynccontextmanager
async def recording_pulls(pull_times: PullTimes | None) -> AsyncIterator[None]:
    """While the block runs, write when tags were pulled, every second (and once at its end)."""
    if pull_times is None:
        yield
        return
    task = asyncio.create_task(pull_times.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
