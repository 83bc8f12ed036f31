"""What `portside repo delete`, `retention`, `quota` and `token` do, over the stores the settings
name: the same registry code the server runs, with the operator as the audit log's actor."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from portside.config.settings import Settings
from portside.metadata.base import (
    AuditEntry,
    Footprint,
    Journal,
    RepositoryRemoval,
    RobotToken,
)
from portside.metadata.sql import SqlMetadataStore
from portside.registry.events import Origin
from portside.registry.immutability import ImmutableTags
from portside.registry.quotas import Quota, Quotas
from portside.registry.repositories import Repositories
from portside.registry.retention import Removal, Retention
from portside.server.audit_log import operator
from portside.server.notifications import change_recorder
from portside.server.robots import create_robot


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[SqlMetadataStore]:
    store = SqlMetadataStore(settings.metadata_url)
    try:
        yield store
    finally:
        await store.close()


def _audited(settings: Settings) -> bool:
    return settings.audit is not None and settings.audit.enabled


def _origin() -> Origin:
    return Origin(actor=operator(), address=socket.gethostname(), method="CLI")


async def delete_repository(settings: Settings, name: str) -> RepositoryRemoval:
    """NameUnknown, or PolicyDenied for an immutable tag."""
    async with opened(settings) as store:
        events = change_recorder(settings)
        immutable = ImmutableTags(settings.policies.immutable_tags)
        return await Repositories(store, events, immutable).delete(name, _origin())


async def retention(settings: Settings, dry_run: bool) -> list[Removal]:
    """What the retention rules remove now (with dry_run, would remove)."""
    policies = settings.policies
    async with opened(settings) as store:
        rules = Retention(
            policies.retention,
            store,
            ImmutableTags(policies.immutable_tags),
            _audited(settings),
            change_recorder(settings),
        )
        now = datetime.now(UTC)
        return await (rules.plan(now) if dry_run else rules.apply(now))


@dataclass(frozen=True, slots=True)
class NamespaceQuota:
    namespace: str
    footprint: Footprint
    quota: Quota | None


async def quota_usage(settings: Settings) -> list[NamespaceQuota]:
    """Every namespace holding a repository, with its usage and its quota (if any)."""
    async with opened(settings) as store:
        quotas = Quotas(settings.policies.quotas, store)
        footprints = await store.namespace_footprints()
        return [
            NamespaceQuota(namespace, footprints[namespace], quotas.quota_of(namespace))
            for namespace in sorted(footprints)
        ]


async def _audit(store: SqlMetadataStore, settings: Settings, action: str, robot: str) -> None:
    if _audited(settings):
        entry = AuditEntry(
            at=datetime.now(UTC),
            action=action,
            actor=operator(),
            address=socket.gethostname(),
            detail=json.dumps({"robot": robot}),
        )
        await store.record(Journal(audit=(entry,)))


async def create_token(
    settings: Settings, name: str, scopes: Sequence[str], lifetime: timedelta | None
) -> tuple[RobotToken, str]:
    """The new robot's record and secret; InvalidRobot or NameTaken."""
    async with opened(settings) as store:
        created = await create_robot(store, name, scopes, lifetime)
        await _audit(store, settings, "token-create", name)
        return created


async def list_tokens(settings: Settings) -> list[RobotToken]:
    async with opened(settings) as store:
        return await store.list_robots()


async def revoke_token(settings: Settings, name: str) -> bool:
    async with opened(settings) as store:
        revoked = await store.delete_robot(name)
        if revoked:
            await _audit(store, settings, "token-revoke", name)
        return revoked
