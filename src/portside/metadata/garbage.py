"""What garbage collection reads: candidates for each kind of garbage, a page at a time, so that
the collector's memory does not grow with the registry (registry/gc.py decides and deletes).

Each read is a query that the database answers by walking its indexes: the collector holds one
page of repositories' candidates, or one page of blobs, never the whole graph. Candidates are
only that: every deletion re-checks them in its own transaction (collection.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, datetime

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.sql.selectable import NamedFromClause

from portside.metadata.base import (
    MARK_TTL,
    BlobState,
    Holders,
    ManifestCandidate,
    ReferenceKind,
)
from portside.metadata.engine import Database
from portside.metadata.pairs import repository_ids
from portside.metadata.statements import chunks, find_repository, now, utc
from portside.metadata.tables import (
    blob_reservations,
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)


def _stays(manifest: NamedFromClause, before: datetime) -> ColumnElement[bool]:
    """The manifest is tagged or created since `before`: it stays, and so does what it needs."""
    tagged = exists().where(
        tags.c.repository_id == manifest.c.repository_id, tags.c.digest == manifest.c.digest
    )
    return or_(manifest.c.created_at >= before, tagged)


def _garbage_age(before: datetime) -> ColumnElement[bool]:
    """A blob record old enough to go: recorded (stored or pending) before `before`, or marked
    by a collector that has had MARK_TTL to finish."""
    return or_(
        and_(blobs.c.state != BlobState.DELETING, blobs.c.created_at < before),
        and_(blobs.c.state == BlobState.DELETING, blobs.c.marked_at < now() - MARK_TTL),
    )


def _unreserved(reserved_since: datetime) -> ColumnElement[bool]:
    return ~exists().where(
        blob_reservations.c.digest == blobs.c.digest,
        blob_reservations.c.created_at >= reserved_since,
    )


class SqlGarbage(Database):
    async def repository_names(self, after: str | None, limit: int) -> list[str]:
        name: ColumnElement[str] = repositories.c.name
        if self.engine.dialect.name == "postgresql":
            name = name.collate("C")  # code-point order, served by ix_repositories_name_c
        query = select(repositories.c.name).order_by(name).limit(limit)
        if after is not None:
            query = query.where(name > after)
        return await self._read(lambda conn: list(conn.scalars(query)))

    async def manifest_candidates(
        self, repositories: Collection[str], before: datetime
    ) -> list[ManifestCandidate]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[ManifestCandidate]:
            names = repository_ids(conn, repositories)
            m, subject, parent = (manifests.alias(alias) for alias in ("m", "s", "p"))
            r = manifest_references
            tagged = exists().where(
                tags.c.repository_id == m.c.repository_id, tags.c.digest == m.c.digest
            )
            subject_stays = exists().where(
                subject.c.repository_id == m.c.repository_id,
                subject.c.digest == m.c.subject,
                _stays(subject, before),
            )
            # `+ 0`: looked up by digest (a manifest has few parents), not by repository_id,
            # the leading column of the primary key, which would walk every reference there.
            parent_stays = exists().where(
                r.c.digest == m.c.digest,
                r.c.repository_id + 0 == m.c.repository_id,
                r.c.kind == ReferenceKind.MANIFEST,
                parent.c.repository_id == m.c.repository_id,
                parent.c.digest == r.c.manifest_digest,
                _stays(parent, before),
            )
            rows = conn.execute(
                select(m.c.repository_id, m.c.digest, m.c.subject)
                .where(
                    m.c.repository_id.in_(names),
                    m.c.created_at < before,
                    ~tagged,
                    ~subject_stays,
                    ~parent_stays,
                )
                .order_by(m.c.repository_id, m.c.digest)
            ).all()
            by_repository: dict[int, list[tuple[str, str | None]]] = defaultdict(list)
            for row in rows:
                by_repository[row.repository_id].append((row.digest, row.subject))
            found: list[ManifestCandidate] = []
            for repository_id, candidates in by_repository.items():
                found += _described(conn, repository_id, names[repository_id], candidates)
            return sorted(found, key=lambda c: (c.repository, c.digest))

        return await self._read(run)

    async def dangling_tags(self, repositories: Collection[str]) -> dict[str, list[str]]:
        def run(conn: Connection) -> dict[str, list[str]]:
            names = repository_ids(conn, repositories)
            has_manifest = exists().where(
                manifests.c.repository_id == tags.c.repository_id,
                manifests.c.digest == tags.c.digest,
            )
            found: dict[str, list[str]] = defaultdict(list)
            for row in conn.execute(
                select(tags.c.repository_id, tags.c.name)
                .where(tags.c.repository_id.in_(names), ~has_manifest)
                .order_by(tags.c.repository_id, tags.c.name)
            ):
                found[names[row.repository_id]].append(row.name)
            return dict(found)

        return await self._read(run)

    async def unreferenced_links(
        self, repositories: Collection[str], before: datetime
    ) -> dict[str, list[str]]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> dict[str, list[str]]:
            names = repository_ids(conn, repositories)
            # A set difference, not NOT EXISTS per link: a link to a layer every repository
            # shares would look its references up among all of that layer's.
            linked = select(repository_blobs.c.repository_id, repository_blobs.c.digest).where(
                repository_blobs.c.repository_id.in_(names),
                repository_blobs.c.created_at < before,
            )
            referenced = select(
                manifest_references.c.repository_id, manifest_references.c.digest
            ).where(manifest_references.c.repository_id.in_(names))
            manifest_digests = select(manifests.c.repository_id, manifests.c.digest).where(
                manifests.c.repository_id.in_(names)
            )
            unused = linked.except_(referenced, manifest_digests).subquery()
            found: dict[str, list[str]] = defaultdict(list)
            for repository_id, digest in conn.execute(
                select(unused.c.repository_id, unused.c.digest).order_by(
                    unused.c.repository_id, unused.c.digest
                )
            ):
                found[names[repository_id]].append(digest)
            return dict(found)

        return await self._read(run)

    async def garbage_blobs(
        self, before: datetime, reserved_since: datetime, after: str | None, limit: int
    ) -> dict[str, int]:
        before, reserved_since = before.astimezone(UTC), reserved_since.astimezone(UTC)

        def run(conn: Connection) -> dict[str, int]:
            linked = exists().where(repository_blobs.c.digest == blobs.c.digest)
            referenced = exists().where(manifest_references.c.digest == blobs.c.digest)
            query = (
                select(blobs.c.digest, blobs.c.size)
                .where(_garbage_age(before), ~linked, ~referenced, _unreserved(reserved_since))
                .order_by(blobs.c.digest)
                .limit(limit)
            )
            if after is not None:
                query = query.where(blobs.c.digest > after)
            return {row.digest: row.size for row in conn.execute(query)}

        return await self._read(run)

    async def recorded_blobs(self, digests: Collection[str]) -> set[str]:
        def run(conn: Connection) -> set[str]:
            found: set[str] = set()
            for chunk in chunks(digests):
                found.update(conn.scalars(select(blobs.c.digest).where(blobs.c.digest.in_(chunk))))
            return found

        return await self._read(run)

    async def upload_sessions(self, ids: Collection[str]) -> dict[str, datetime]:
        def run(conn: Connection) -> dict[str, datetime]:
            found: dict[str, datetime] = {}
            for chunk in chunks(ids):
                rows = conn.execute(
                    select(uploads.c.id, uploads.c.updated_at).where(uploads.c.id.in_(chunk))
                )
                found.update((row.id, utc(row.updated_at)) for row in rows)
            return found

        return await self._read(run)

    async def expired_uploads(self, before: datetime, after: str | None, limit: int) -> list[str]:
        query = (
            select(uploads.c.id)
            .where(uploads.c.updated_at < before.astimezone(UTC))
            .order_by(uploads.c.id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(uploads.c.id > after)
        return await self._read(lambda conn: list(conn.scalars(query)))

    async def manifests_referencing(self, repository: str, digest: str, limit: int) -> list[str]:
        def run(conn: Connection) -> list[str]:
            repository_id = find_repository(conn, repository)
            r = manifest_references.c
            query = (
                select(r.manifest_digest)
                .where(r.digest == digest, r.repository_id + 0 == repository_id)
                .limit(limit)
            )
            return list(conn.scalars(query)) if repository_id is not None else []

        return await self._read(run)

    async def links_made_before(
        self, repository: str, digests: Collection[str], before: datetime
    ) -> list[str]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[str]:
            repository_id = find_repository(conn, repository)
            link = repository_blobs.c
            is_manifest = exists().where(
                manifests.c.repository_id == link.repository_id, manifests.c.digest == link.digest
            )
            found: list[str] = []
            for chunk in chunks(digests):
                found += conn.scalars(
                    select(link.digest).where(
                        link.repository_id == repository_id,
                        link.digest.in_(chunk),
                        link.created_at < before,
                        ~is_manifest,
                    )
                )
            return sorted(found)

        return await self._read(run)

    async def blob_holders(self, digest: str, limit: int) -> Holders:
        def run(conn: Connection) -> Holders:
            links = conn.scalars(
                select(repositories.c.name)
                .join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
                .where(repository_blobs.c.digest == digest)
                .limit(limit)
            )
            references = conn.execute(
                select(repositories.c.name, manifest_references.c.manifest_digest)
                .join(
                    manifest_references,
                    manifest_references.c.repository_id == repositories.c.id,
                )
                .where(manifest_references.c.digest == digest)
                .limit(limit)
            )
            return Holders(tuple(links), tuple((row[0], row[1]) for row in references))

        return await self._read(run)

    async def releasable_blobs(
        self, digests: Collection[str], before: datetime, reserved_since: datetime
    ) -> dict[str, int]:
        before, reserved_since = before.astimezone(UTC), reserved_since.astimezone(UTC)

        def run(conn: Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for chunk in chunks(digests):
                rows = conn.execute(
                    select(blobs.c.digest, blobs.c.size).where(
                        blobs.c.digest.in_(chunk),
                        _garbage_age(before),
                        _unreserved(reserved_since),
                    )
                )
                found.update((row.digest, row.size) for row in rows)
            return found

        return await self._read(run)

    async def expired_reservations(self, before: datetime) -> int:
        query = select(func.count()).where(blob_reservations.c.created_at < before.astimezone(UTC))
        return await self._read(lambda conn: conn.scalar(query) or 0)


def _described(
    conn: Connection,
    repository_id: int,
    repository: str,
    candidates: list[tuple[str, str | None]],
) -> list[ManifestCandidate]:
    """The candidates of one repository with their parents, their subjects that are manifests
    there, and their references."""
    digests = [digest for digest, _ in candidates]
    r = manifest_references.c
    parents: dict[str, list[str]] = defaultdict(list)
    references: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks(digests):
        for child, parent in conn.execute(
            select(r.digest, r.manifest_digest).where(
                r.repository_id + 0 == repository_id,
                r.digest.in_(chunk),
                r.kind == ReferenceKind.MANIFEST,
            )
        ):
            parents[child].append(parent)
        for manifest, digest in conn.execute(
            select(r.manifest_digest, r.digest).where(
                r.repository_id == repository_id, r.manifest_digest.in_(chunk)
            )
        ):
            references[manifest].append(digest)
    subjects = {subject for _, subject in candidates if subject is not None}
    present: set[str] = set()
    for chunk in chunks(subjects):
        present.update(
            conn.scalars(
                select(manifests.c.digest).where(
                    manifests.c.repository_id == repository_id, manifests.c.digest.in_(chunk)
                )
            )
        )
    return [
        ManifestCandidate(
            repository,
            digest,
            subject if subject in present else None,
            tuple(sorted(parents[digest])),
            tuple(sorted(references[digest])),
        )
        for digest, subject in candidates
    ]
