"""What discovery lists: repositories, their tags, referrers, and search over names and
descriptions, in the spec's lexical (code point) order."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, exists, select

from portside.metadata.base import ARTIFACT_TYPE_MAX, Manifest, RepositorySummary
from portside.metadata.manifests import MANIFEST_COLUMNS, manifest_record
from portside.metadata.statements import find_repository, utc
from portside.metadata.tables import manifests, repositories, tags
from portside.metadata.text_search import SqlTextSearch, matching


def _before_nul(value: str) -> str:
    """A `last` read up to its first NUL. No name or tag holds one (PostgreSQL text cannot), so
    the names after "a\\0..." in code-point order are exactly those after "a": the same answer
    SQLite gives by comparing bytes, without sending PostgreSQL what it refuses."""
    return value.partition("\x00")[0]


class SqlListings(SqlTextSearch):
    def _lexical(self, column: ColumnElement[str]) -> ColumnElement[str]:
        """column ordered by code point, as the spec's "lexical" order is, whatever the locale
        of the database (SQLite compares bytes already)."""
        return column.collate("C") if self.engine.dialect.name == "postgresql" else column

    async def repository_exists(self, repository: str) -> bool:
        return await self._read(lambda conn: find_repository(conn, repository) is not None)

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str]:
        def run(conn: Connection) -> list[str]:
            # The repository's id first, as a constant: joined by name, PostgreSQL guesses the
            # repository has an average share of the tags and sorts them all, rather than
            # walk ix_tags_name_c from `last`.
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return []
            query = (
                select(tags.c.name)
                .where(tags.c.repository_id == repository_id)
                .order_by(self._lexical(tags.c.name))
            )
            if last is not None:
                query = query.where(self._lexical(tags.c.name) > _before_nul(last))
            if n is not None:
                query = query.limit(n)
            return list(conn.scalars(query))

        return await self._read(run)

    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
        name = self._lexical(repositories.c.name)
        query = select(repositories.c.name).where(has_manifest).order_by(name)
        if last is not None:
            query = query.where(name > _before_nul(last))
        if n is not None:
            query = query.limit(n)
        return await self._read(lambda conn: list(conn.scalars(query)))

    async def count_search_matches(self, query: str, cap: int) -> int:
        if "\x00" in query:  # in no name or description; and PostgreSQL refuses it as text
            return 0
        return await self._read(lambda conn: self._count_matches(conn, query, cap))

    async def search_repositories(
        self, query: str, after: str | None, limit: int
    ) -> list[RepositorySummary]:
        if "\x00" in query or limit == 0:
            return []

        def run(conn: Connection) -> list[RepositorySummary]:
            few = self._few_matches(conn, query, repositories.c.name, repositories.c.description)
            if few is None:
                found = select(repositories.c.name, repositories.c.description).where(
                    matching(query)
                )
                name = self._lexical(repositories.c.name)
            else:
                found = select(few.c.name, few.c.description)
                name = self._lexical(few.c.name)
            found = found.order_by(name).limit(limit)
            if after is not None:
                found = found.where(name > _before_nul(after))
            return [RepositorySummary(row.name, row.description) for row in conn.execute(found)]

        return await self._read(run)

    async def list_referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[Manifest]:
        if artifact_type is not None and (
            "\x00" in artifact_type or len(artifact_type) > ARTIFACT_TYPE_MAX
        ):
            return []  # no manifest has one (registry/manifests.py refuses it), nor could keep it
        query = (
            select(*MANIFEST_COLUMNS, manifests.c.created_at)
            .join(repositories, repositories.c.id == manifests.c.repository_id)
            .where(repositories.c.name == repository, manifests.c.subject == subject)
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        rows = await self._read(lambda conn: conn.execute(query).all())
        # Sorted here, not by ORDER BY created_at: SQLite would then walk ix_manifests_created,
        # every manifest of the repository, rather than ix_manifests_subject's few referrers.
        ordered = sorted(rows, key=lambda row: (utc(row.created_at), row.digest))
        return [manifest_record(repository, row[:-1]) for row in ordered]
