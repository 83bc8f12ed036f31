"""What discovery lists: repositories, their tags, referrers, and search over names and
descriptions, in the spec's lexical (code point) order."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, Select, exists, func, or_, select

from portside.metadata.base import ARTIFACT_TYPE_MAX, Manifest, RepositorySummary
from portside.metadata.engine import Database
from portside.metadata.manifests import MANIFEST_COLUMNS, manifest_record
from portside.metadata.statements import find_repository, utc
from portside.metadata.tables import manifests, repositories, tags


def _before_nul(value: str) -> str:
    """A `last` read up to its first NUL. No name or tag holds one (PostgreSQL text cannot), so
    the names after "a\\0..." in code-point order are exactly those after "a": the same answer
    SQLite gives by comparing bytes, without sending PostgreSQL what it refuses."""
    return value.partition("\x00")[0]


class SqlListings(Database):
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

    def _summaries(self, query: str) -> Select[tuple[str, str | None]]:
        """Repositories with a manifest, their descriptions, matching query, ordered by name."""
        newest_description = (
            select(manifests.c.description)
            .where(
                manifests.c.repository_id == repositories.c.id,
                manifests.c.description.is_not(None),
            )
            .order_by(manifests.c.created_at.desc(), manifests.c.digest.desc())
            .limit(1)
            .scalar_subquery()
        )
        has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
        summaries = (
            select(repositories.c.name, newest_description.label("description"))
            .where(has_manifest)
            .subquery()
        )
        found = select(summaries.c.name, summaries.c.description).order_by(
            self._lexical(summaries.c.name)
        )
        if query:
            # lower() folds ASCII only on SQLite, all of Unicode on PostgreSQL; names are ASCII.
            found = found.where(
                or_(
                    summaries.c.name.icontains(query, autoescape=True),
                    summaries.c.description.icontains(query, autoescape=True),
                )
            )
        return found

    async def search_repositories(
        self, query: str, offset: int, limit: int | None
    ) -> tuple[int, list[RepositorySummary]]:
        if "\x00" in query:  # in no name or description; and PostgreSQL refuses it as text
            return 0, []
        found = self._summaries(query)
        counted = select(func.count()).select_from(found.order_by(None).subquery())
        page = found.offset(offset).limit(limit)

        def run(conn: Connection) -> tuple[int, list[RepositorySummary]]:
            total = conn.scalar(counted) or 0
            rows = conn.execute(page).all()
            return total, [RepositorySummary(row.name, row.description) for row in rows]

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
