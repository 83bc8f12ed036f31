"""Garbage collection as the server and `portside gc` run it, from the settings.

With `gc_interval` set, every worker process runs a background task that asks, now and then, for
the lease of the next run (registry/gc.py, collect_periodically): one process of all those that
share the metadata, on this machine or others, collects each interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from portside.config.settings import Settings
from portside.registry.gc import Collector, Policy, collect_periodically
from portside.registry.retention import RetentionStore
from portside.server.policies import build_retention
from portside.storage.base import BlobStore


def gc_policy(settings: Settings) -> Policy:
    mirroring = settings.mirroring
    return Policy(
        grace_period=settings.gc_grace_period,
        untagged=settings.gc_untagged,
        upload_expiry=settings.upload_expiry,
        cache_keep=mirroring.keep_unpulled if mirroring is not None else None,
        audited=settings.audit is not None and settings.audit.enabled,
    )


@contextlib.asynccontextmanager
async def background_collection(
    settings: Settings, storage: BlobStore, metadata: RetentionStore
) -> AsyncIterator[None]:
    """Collect every gc_interval while the block runs, if gc_interval is set: the retention
    rules first, then garbage."""
    if settings.gc_interval is None:
        yield
        return
    retention = build_retention(settings, metadata)
    collector = Collector(storage, metadata, gc_policy(settings), retention=retention)
    task = asyncio.create_task(collect_periodically(collector, metadata, settings.gc_interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
