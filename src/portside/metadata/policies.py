"""What the registry's policies read and write: a namespace's usage (quotas), tags with their
push and pull times (retention), and a whole repository's deletion."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    or_,
    select,
    update,
)

from portside.metadata.base import (
    QUIET,
    Footprint,
    Journal,
    RepositoryRemoval,
    TagFilter,
    TagHistory,
    TagLocked,
    TagPull,
)
from portside.metadata.engine import Database
from portside.metadata.journal import write_journal
from portside.metadata.prepared import Prepared
from portside.metadata.statements import find_repository, utc
from portside.metadata.tables import (
    cached_manifests,
    cached_tags,
    manifest_references,
    manifests,
    namespace_blobs,
    namespaces,
    repositories,
    repository_blobs,
    tags,
    uploads,
)

# A namespace's usage is a row that triggers keep (0013): one lookup, whatever its size.
_FOOTPRINT_COLUMNS = (namespaces.c.size, namespaces.c.repositories, namespaces.c.tags)
_FOOTPRINT = Prepared(
    select(*_FOOTPRINT_COLUMNS).where(namespaces.c.name == bindparam("namespace"))
)
_HOLDS = Prepared(
    select(namespace_blobs.c.links).where(
        namespace_blobs.c.namespace == bindparam("namespace"),
        namespace_blobs.c.digest == bindparam("digest"),
    )
)

_PULLED = (
    update(tags)
    .where(
        tags.c.repository_id
        == select(repositories.c.id)
        .where(repositories.c.name == bindparam("repository"))
        .scalar_subquery(),
        tags.c.name == bindparam("tag"),
        or_(tags.c.pulled_at.is_(None), tags.c.pulled_at < bindparam("at")),
    )
    .values(pulled_at=bindparam("at"))
)


class SqlPolicies(Database):
    async def namespace_footprint(self, namespace: str) -> Footprint:
        row = await self._first(_FOOTPRINT, namespace=namespace)
        return Footprint(0, 0, 0) if row is None else Footprint(*(int(value) for value in row))

    async def namespace_footprints(self) -> dict[str, Footprint]:
        query = select(namespaces.c.name, *_FOOTPRINT_COLUMNS).where(namespaces.c.repositories > 0)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return {
            name: Footprint(int(size), int(held), int(tagged)) for name, size, held, tagged in rows
        }

    async def namespace_holds(self, namespace: str, digest: str) -> bool:
        return await self._first(_HOLDS, namespace=namespace, digest=digest) is not None

    async def tag_history(self, repository: str) -> list[TagHistory]:
        query = (
            select(tags.c.name, tags.c.digest, tags.c.updated_at, tags.c.pulled_at)
            .join(repositories, repositories.c.id == tags.c.repository_id)
            .where(repositories.c.name == repository)
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [
            TagHistory(name, digest, utc(pushed), None if pulled is None else utc(pulled))
            for name, digest, pushed, pulled in rows
        ]

    async def expire_tag(
        self,
        repository: str,
        history: TagHistory,
        pulled_before: datetime | None,
        journal: Journal = QUIET,
    ) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return False
            statement = delete(tags).where(
                tags.c.repository_id == repository_id,
                tags.c.name == history.name,
                tags.c.digest == history.digest,
                tags.c.updated_at <= history.pushed_at,
            )
            if pulled_before is not None:
                statement = statement.where(
                    or_(tags.c.pulled_at.is_(None), tags.c.pulled_at < pulled_before)
                )
            if conn.execute(statement).rowcount == 0:
                return False
            # As delete_tag does: a pull-through cache's record of the tag goes with it.
            conn.execute(
                delete(cached_tags).where(
                    cached_tags.c.repository_id == repository_id,
                    cached_tags.c.name == history.name,
                )
            )
            write_journal(conn, journal)
            return True

        return await self._write(run)

    async def record_pulls(self, pulls: Sequence[TagPull]) -> None:
        if not pulls:
            return
        values = [{"repository": p.repository, "tag": p.tag, "at": p.at} for p in pulls]
        await self._write(lambda conn: conn.execute(_PULLED, values), durable=False)

    async def delete_repository(
        self, repository: str, protected: TagFilter | None = None, journal: Journal = QUIET
    ) -> RepositoryRemoval | None:
        def run(conn: Connection) -> RepositoryRemoval | None:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return None
            held = select(tags.c.name, tags.c.digest).where(tags.c.repository_id == repository_id)
            tagged = conn.execute(held.with_for_update()).all()
            if protected is not None:
                for tag, digest in tagged:
                    if protected(tag):
                        raise TagLocked(tag, digest)
            owned = [
                (table, table.c.repository_id)
                for table in (cached_tags, cached_manifests, tags, manifest_references)
            ]
            for table, column in owned:
                conn.execute(delete(table).where(column == repository_id))
            removed = conn.execute(
                delete(manifests).where(manifests.c.repository_id == repository_id)
            ).rowcount
            conn.execute(
                delete(repository_blobs).where(repository_blobs.c.repository_id == repository_id)
            )
            conn.execute(delete(uploads).where(uploads.c.repository == repository))
            conn.execute(delete(repositories).where(repositories.c.id == repository_id))
            write_journal(conn, journal)
            return RepositoryRemoval(int(removed), len(tagged))

        return await self._write(run)
