"""What the registry's policies read and write: a namespace's usage (quotas), tags with their
push and pull times (retention), and a whole repository's deletion."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    delete,
    exists,
    func,
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
from portside.metadata.statements import find_repository, utc
from portside.metadata.tables import (
    blobs,
    cached_manifests,
    cached_tags,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)


def _in_namespace(dialect: str, namespace: str) -> ColumnElement[bool]:
    """Repository names in the namespace: a range of names `namespace/...`, in code-point
    order (PostgreSQL's index ix_repositories_name_c serves it); "" is the names without a
    `/`, which takes a scan."""
    if not namespace:
        return ~repositories.c.name.contains("/", autoescape=True)
    name = repositories.c.name.collate("C") if dialect == "postgresql" else repositories.c.name
    # "0" follows "/" in code-point order: the range holds exactly the names under namespace/.
    return (name >= namespace + "/") & (name < namespace + "0")


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
        def run(conn: Connection) -> Footprint:
            inside = _in_namespace(conn.dialect.name, namespace)
            linked = (
                select(repository_blobs.c.digest)
                .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
                .where(inside)
            )
            size = select(func.coalesce(func.sum(blobs.c.size), 0)).where(
                blobs.c.digest.in_(linked)
            )
            holding = select(func.count()).where(
                inside, exists().where(manifests.c.repository_id == repositories.c.id)
            )
            tagged = (
                select(func.count())
                .select_from(tags)
                .join(repositories, repositories.c.id == tags.c.repository_id)
                .where(inside)
            )
            return Footprint(
                int(conn.scalar(size) or 0),
                int(conn.scalar(holding) or 0),
                int(conn.scalar(tagged) or 0),
            )

        return await self._read(run)

    async def namespace_holds(self, namespace: str, digest: str) -> bool:
        def run(conn: Connection) -> bool:
            query = (
                select(repository_blobs.c.digest)
                .join(repositories, repositories.c.id == repository_blobs.c.repository_id)
                .where(
                    repository_blobs.c.digest == digest, _in_namespace(conn.dialect.name, namespace)
                )
                .limit(1)
            )
            return conn.execute(query).first() is not None

        return await self._read(run)

    async def holds_manifests(self, repository: str) -> bool:
        query = (
            select(manifests.c.digest)
            .join(repositories, repositories.c.id == manifests.c.repository_id)
            .where(repositories.c.name == repository)
            .limit(1)
        )
        return await self._read(lambda conn: conn.execute(query).first() is not None)

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
