"""The pull-through cache's rows: which manifests and tags came from an upstream, when each
manifest was last pulled and each tag last checked there."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, delete, select, update

from portside.metadata.base import AuditEntry, Claim, Manifest, Reference
from portside.metadata.engine import Database
from portside.metadata.journal import like, write_audit
from portside.metadata.manifests import delete_manifest_rows, races_as_conflicts, store_manifest
from portside.metadata.statements import ensure_repository, find_repository, upsert, utc
from portside.metadata.tables import cached_manifests, cached_tags, repositories, tags


def _check_tag(conn: Connection, repository_id: int, tag: str, at: datetime) -> None:
    conn.execute(
        upsert(conn.dialect, cached_tags)
        .values(repository_id=repository_id, name=tag, checked_at=at)
        .on_conflict_do_update(
            index_elements=[cached_tags.c.repository_id, cached_tags.c.name],
            set_={"checked_at": at},
        )
    )


class SqlCache(Database):
    async def put_cached_manifest(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: Claim,
        at: datetime,
    ) -> None:
        def run(conn: Connection) -> None:
            repository_id = ensure_repository(conn, manifest.repository)
            store_manifest(conn, repository_id, manifest, references, tag, reservation)
            conn.execute(
                upsert(conn.dialect, cached_manifests)
                .values(repository_id=repository_id, digest=manifest.digest, pulled_at=at)
                .on_conflict_do_update(
                    index_elements=[cached_manifests.c.repository_id, cached_manifests.c.digest],
                    set_={"pulled_at": at},
                )
            )
            if tag is not None:
                _check_tag(conn, repository_id, tag, at)

        with races_as_conflicts(manifest.digest):
            await self._write(run)

    async def cached_tag(self, repository: str, tag: str) -> datetime | None:
        query = (
            select(cached_tags.c.checked_at)
            .join(repositories, repositories.c.id == cached_tags.c.repository_id)
            .join(
                tags,
                and_(
                    tags.c.repository_id == cached_tags.c.repository_id,
                    tags.c.name == cached_tags.c.name,
                ),
            )
            .where(repositories.c.name == repository, cached_tags.c.name == tag)
        )
        found = await self._read(lambda conn: conn.scalar(query))
        return None if found is None else utc(found)

    async def touch_cached(
        self, repository: str, digest: str, at: datetime, tag: str | None = None
    ) -> None:
        def run(conn: Connection) -> None:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return
            conn.execute(
                update(cached_manifests)
                .where(
                    cached_manifests.c.repository_id == repository_id,
                    cached_manifests.c.digest == digest,
                    cached_manifests.c.pulled_at < at,
                )
                .values(pulled_at=at)
            )
            if tag is not None:
                _check_tag(conn, repository_id, tag, at)

        # A pull time lost to a power cut only keeps a cached image a little longer.
        await self._write(run, durable=False)

    async def expired_cached_manifests(self, before: datetime, limit: int) -> list[tuple[str, str]]:
        query = (
            select(repositories.c.name, cached_manifests.c.digest)
            .join(repositories, repositories.c.id == cached_manifests.c.repository_id)
            .where(cached_manifests.c.pulled_at < before)
            .order_by(cached_manifests.c.pulled_at)
            .limit(limit)
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [(row[0], row[1]) for row in rows]

    async def expire_cached_manifest(
        self, repository: str, digest: str, before: datetime, audit: AuditEntry | None = None
    ) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return False
            held = conn.scalar(
                select(cached_manifests.c.digest)
                .where(
                    cached_manifests.c.repository_id == repository_id,
                    cached_manifests.c.digest == digest,
                    cached_manifests.c.pulled_at < before,
                )
                .with_for_update()
            )
            if held is None:
                return False  # pulled meanwhile, or gone
            tagged = conn.scalars(
                select(tags.c.name).where(
                    tags.c.repository_id == repository_id, tags.c.digest == digest
                )
            ).all()
            if tagged:
                conn.execute(
                    delete(cached_tags).where(
                        cached_tags.c.repository_id == repository_id,
                        cached_tags.c.name.in_(tagged),
                    )
                )
            deleted = delete_manifest_rows(conn, repository_id, digest)
            if deleted:
                write_audit(conn, like(audit, repository, [digest]))
            return deleted

        return await self._collect(run)
