"""What the web UI reads: repositories and tags a page at a time, in keyset order over indexed
columns (no OFFSET, no count of everything), the bytes a pull moves, storage by namespace.

A repository's size, last push and description are columns that triggers keep (0010), so that
sorting 100,000 repositories by size reads one index, not every link; a namespace's usage is a
row they keep (0013)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    exists,
    func,
    select,
    tuple_,
)
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import KeyedColumnElement

from portside.metadata.base import (
    NamespaceUsage,
    RepositoryOrder,
    RepositoryRow,
    TagRow,
)
from portside.metadata.statements import chunks, find_repository, utc
from portside.metadata.tables import (
    blob_totals,
    blobs,
    cached_manifests,
    manifest_references,
    manifests,
    namespaces,
    repositories,
    tags,
)
from portside.metadata.text_search import SqlTextSearch, matching

REPOSITORY_COLUMNS = (
    repositories.c.id,
    repositories.c.name,
    repositories.c.description,
    repositories.c.size,
    repositories.c.pushed_at,
)


def _repository_row(row: Any) -> RepositoryRow:
    pushed_at = None if row.pushed_at is None else utc(row.pushed_at)
    return RepositoryRow(row.id, row.name, row.description, row.size, pushed_at)


def _has_manifest() -> ColumnElement[bool]:
    return exists().where(manifests.c.repository_id == repositories.c.id)


class SqlBrowsing(SqlTextSearch):
    def _code_points(self, column: ColumnElement[str]) -> ColumnElement[str]:
        """column compared by code point (SQLite compares bytes already)."""
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    async def repository_rows(
        self, order: RepositoryOrder, text: str, after: RepositoryRow | None, limit: int
    ) -> list[RepositoryRow]:
        if "\x00" in text:  # in no name or description; and PostgreSQL refuses it as text
            return []

        def run(conn: Connection) -> list[RepositoryRow]:
            # Few matches of the text are sorted whole; else repositories walked in order.
            few = self._few_matches(conn, text, *REPOSITORY_COLUMNS)
            source: ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]
            if few is None:
                query = select(*REPOSITORY_COLUMNS).where(matching(text))
                source = repositories.c
            else:
                query = select(few)
                source = few.c
            query = query.limit(limit)
            if order is RepositoryOrder.NAME:
                name = self._code_points(source.name)
                query = query.order_by(name)
                if after is not None:
                    query = query.where(name > after.name)
            else:
                by_size = order is RepositoryOrder.SIZE
                column = source.size if by_size else source.pushed_at
                query = query.where(column.is_not(None)).order_by(column.desc(), source.id.desc())
                if after is not None:
                    key = after.size if by_size else after.pushed_at
                    query = query.where(tuple_(column, source.id) < tuple_(key, after.id))
            return [_repository_row(row) for row in conn.execute(query)]

        return await self._read(run)

    async def repository_row(self, name: str) -> RepositoryRow | None:
        query = select(*REPOSITORY_COLUMNS).where(repositories.c.name == name, _has_manifest())
        row = await self._read(lambda conn: conn.execute(query).first())
        return None if row is None else _repository_row(row)

    async def tag_rows(self, repository: str, after: str | None, limit: int) -> list[TagRow]:
        name = self._code_points(tags.c.name)

        def run(conn: Connection) -> list[TagRow]:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return []
            query = (
                select(
                    tags.c.name,
                    tags.c.digest,
                    tags.c.updated_at,
                    manifests.c.media_type,
                    manifests.c.size,
                    manifests.c.artifact_type,
                    # Pull times kept for retention (0011), else a pull-through cache's.
                    func.coalesce(tags.c.pulled_at, cached_manifests.c.pulled_at).label(
                        "pulled_at"
                    ),
                )
                .select_from(tags)
                .join(
                    manifests,
                    and_(
                        manifests.c.repository_id == tags.c.repository_id,
                        manifests.c.digest == tags.c.digest,
                    ),
                )
                .outerjoin(
                    cached_manifests,
                    and_(
                        cached_manifests.c.repository_id == tags.c.repository_id,
                        cached_manifests.c.digest == tags.c.digest,
                    ),
                )
                .where(tags.c.repository_id == repository_id)
                .order_by(name)
                .limit(limit)
            )
            if after is not None:
                query = query.where(name > after.partition("\x00")[0])
            return [
                TagRow(
                    row.name,
                    row.digest,
                    utc(row.updated_at),
                    row.media_type,
                    row.size,
                    row.artifact_type,
                    None if row.pulled_at is None else utc(row.pulled_at),
                )
                for row in conn.execute(query)
            ]

        return await self._read(run)

    async def tags_on(self, repository: str, digest: str) -> list[str]:
        query = (
            select(tags.c.name)
            .join(repositories, repositories.c.id == tags.c.repository_id)
            .where(repositories.c.name == repository, tags.c.digest == digest)
        )
        # Sorted here: with ORDER BY name, SQLite walks every tag of the repository in name
        # order rather than ix_tags_digest's few (83 ms at 100,000 tags, not 1).
        found = await self._read(lambda conn: list(conn.scalars(query)))
        return sorted(found)

    async def pull_sizes(self, repository: str, digests: Collection[str]) -> dict[str, int]:
        def references(conn: Connection, repository_id: int, owners: Collection[str]) -> list[Any]:
            found: list[Any] = []
            for part in chunks(owners):
                query = (
                    select(
                        manifest_references.c.manifest_digest,
                        manifest_references.c.digest,
                        blobs.c.size,
                    )
                    .outerjoin(blobs, blobs.c.digest == manifest_references.c.digest)
                    .where(
                        manifest_references.c.repository_id == repository_id,
                        manifest_references.c.manifest_digest.in_(part),
                    )
                )
                found += conn.execute(query).all()
            return found

        def run(conn: Connection) -> dict[str, int]:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return {}
            own: dict[str, int] = {}
            for part in chunks(digests):
                query = select(manifests.c.digest, manifests.c.size).where(
                    manifests.c.repository_id == repository_id, manifests.c.digest.in_(part)
                )
                own.update((found.digest, found.size) for found in conn.execute(query))
            # Two levels: an index's children are image manifests, whose references are blobs.
            direct = references(conn, repository_id, own)
            children = {row.digest for row in direct}
            nested = references(conn, repository_id, children)
            referenced: dict[str, dict[str, int]] = {}
            for row in [*direct, *nested]:
                referenced.setdefault(row.manifest_digest, {})[row.digest] = row.size or 0
            sizes = {}
            for digest, size in own.items():
                moved = dict(referenced.get(digest, {}))
                for child in list(moved):
                    moved.update(referenced.get(child, {}))
                sizes[digest] = size + sum(moved.values())
            return sizes

        return await self._read(run)

    async def namespace_usage(self) -> list[NamespaceUsage]:
        query = (
            select(namespaces.c.name, namespaces.c.repositories, namespaces.c.size)
            .where(namespaces.c.repositories > 0)
            .order_by(namespaces.c.name)
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [NamespaceUsage(name, int(held), int(size)) for name, held, size in rows]

    async def stored_blobs(self) -> tuple[int, int]:
        query = select(
            func.coalesce(func.sum(blob_totals.c.blobs), 0),
            func.coalesce(func.sum(blob_totals.c.size), 0),
        )
        row = await self._read(lambda conn: conn.execute(query).one())
        return int(row[0]), int(row[1])
