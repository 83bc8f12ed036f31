"""What garbage collection reads and deletes (registry/gc.py has the argument for its safety).

Every deletion locks its candidates, skipping those a writer holds, and re-checks them in later
statements, which see what such writers committed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    exists,
    or_,
    select,
    update,
)

from portside.metadata.base import (
    MARK_TTL,
    AuditEntry,
    BlobRecord,
    BlobState,
    LinkRecord,
    ManifestRecord,
    ReferenceKind,
    ReferenceRecord,
    ReservationRecord,
    Snapshot,
    TagRecord,
)
from portside.metadata.engine import Database
from portside.metadata.journal import like, write_audit
from portside.metadata.statements import chunks, find_repository, insert_missing, now, utc
from portside.metadata.tables import (
    blob_reservations,
    blobs,
    cached_manifests,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    uploads,
)
from portside.metadata.uploads import UPLOAD_COLUMNS, upload_record


def _matching(
    conn: Connection,
    column: ColumnElement[str],
    digests: Collection[str],
    *where: ColumnElement[bool],
) -> set[str]:
    """Those of digests that column holds in rows matching where."""
    found: set[str] = set()
    for chunk in chunks(digests):
        found.update(conn.scalars(select(column).where(column.in_(chunk), *where).distinct()))
    return found


def _lock_older(
    conn: Connection,
    digest: ColumnElement[str],
    created_at: ColumnElement[datetime],
    where: ColumnElement[bool],
    digests: Collection[str],
    before: datetime,
) -> set[str]:
    """The digests among digests whose rows (where) were created before `before`, locked for this
    transaction; rows a concurrent writer holds are skipped, not waited for."""
    found: set[str] = set()
    for chunk in chunks(digests):
        found.update(
            conn.scalars(
                select(digest)
                .where(where, digest.in_(chunk), created_at < before)
                .order_by(digest)
                .with_for_update(skip_locked=True)
            )
        )
    return found


def _still_needed(
    conn: Connection, repository_id: int, candidates: set[str], keep_referrers: bool
) -> set[str]:
    """The candidates that a manifest outside them needs, or that are tagged."""
    needed = _matching(conn, tags.c.digest, candidates, tags.c.repository_id == repository_id)
    parents: list[tuple[str, str]] = []
    for chunk in chunks(candidates):
        parents += conn.execute(
            select(manifest_references.c.digest, manifest_references.c.manifest_digest).where(
                manifest_references.c.repository_id == repository_id,
                manifest_references.c.kind == ReferenceKind.MANIFEST,
                manifest_references.c.digest.in_(chunk),
            )
        ).all()
    needed |= {child for child, parent in parents if parent not in candidates}
    if keep_referrers:
        subjects: list[tuple[str, str]] = []
        for chunk in chunks(candidates):
            subjects += conn.execute(
                select(manifests.c.digest, manifests.c.subject).where(
                    manifests.c.repository_id == repository_id,
                    manifests.c.digest.in_(chunk),
                    manifests.c.subject.is_not(None),
                )
            ).all()
        outside = {subject for _, subject in subjects if subject not in candidates}
        kept = _matching(
            conn, manifests.c.digest, outside, manifests.c.repository_id == repository_id
        )
        needed |= {referrer for referrer, subject in subjects if subject in kept}
    return needed & candidates


class SqlCollection(Database):
    async def gc_snapshot(self) -> Snapshot:
        def run(conn: Connection) -> Snapshot:
            if conn.dialect.name == "postgresql":  # one snapshot for every query below
                conn.execution_options(isolation_level="REPEATABLE READ")

            def rows(*columns: Any) -> Sequence[Any]:
                return conn.execute(select(*columns)).all()

            names = dict(rows(repositories.c.id, repositories.c.name))
            m, t, r, rb, b, br = (
                manifests.c,
                tags.c,
                manifest_references.c,
                repository_blobs.c,
                blobs.c,
                blob_reservations.c,
            )
            return Snapshot(
                manifests=tuple(
                    ManifestRecord(names[row[0]], row[1], row[2], utc(row[3]))
                    for row in rows(m.repository_id, m.digest, m.subject, m.created_at)
                ),
                tags=tuple(
                    TagRecord(names[row[0]], row[1], row[2])
                    for row in rows(t.repository_id, t.name, t.digest)
                ),
                references=tuple(
                    ReferenceRecord(names[row[0]], row[1], row[2], ReferenceKind(row[3]))
                    for row in rows(r.repository_id, r.manifest_digest, r.digest, r.kind)
                    if row[0] in names
                ),
                links=tuple(
                    LinkRecord(names[row[0]], row[1], utc(row[2]))
                    for row in rows(rb.repository_id, rb.digest, rb.created_at)
                ),
                blobs=tuple(
                    BlobRecord(
                        row[0],
                        row[1],
                        BlobState(row[2]),
                        utc(row[3]),
                        None if row[4] is None else utc(row[4]),
                    )
                    for row in rows(b.digest, b.size, b.state, b.created_at, b.marked_at)
                ),
                reservations=tuple(
                    ReservationRecord(row[0], utc(row[1])) for row in rows(br.digest, br.created_at)
                ),
                uploads=tuple(upload_record(row) for row in conn.execute(select(*UPLOAD_COLUMNS))),
            )

        return await self._read(run)

    async def delete_manifests(
        self,
        repository: str,
        digests: Collection[str],
        before: datetime,
        keep_referrers: bool,
        audit: AuditEntry | None = None,
    ) -> list[str]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[str]:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return []
            here = manifests.c.repository_id == repository_id
            candidates = _lock_older(
                conn, manifests.c.digest, manifests.c.created_at, here, digests, before
            )
            # Keeping one candidate may make it need others (its children, its referrers).
            while needed := _still_needed(conn, repository_id, candidates, keep_referrers):
                candidates -= needed
            for chunk in chunks(candidates):
                conn.execute(delete(manifests).where(here, manifests.c.digest.in_(chunk)))
                conn.execute(
                    delete(manifest_references).where(
                        manifest_references.c.repository_id == repository_id,
                        manifest_references.c.manifest_digest.in_(chunk),
                    )
                )
                conn.execute(
                    delete(repository_blobs).where(
                        repository_blobs.c.repository_id == repository_id,
                        repository_blobs.c.digest.in_(chunk),
                    )
                )
                conn.execute(
                    delete(cached_manifests).where(
                        cached_manifests.c.repository_id == repository_id,
                        cached_manifests.c.digest.in_(chunk),
                    )
                )
            deleted = sorted(candidates)
            write_audit(conn, like(audit, repository, deleted))
            return deleted

        return await self._collect(run)

    async def delete_dangling_tags(self, repository: str) -> list[str]:
        def run(conn: Connection) -> list[str]:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return []
            has_manifest = exists().where(
                manifests.c.repository_id == tags.c.repository_id,
                manifests.c.digest == tags.c.digest,
            )
            dangling = list(
                conn.scalars(
                    delete(tags)
                    .where(tags.c.repository_id == repository_id, ~has_manifest)
                    .returning(tags.c.name)
                )
            )
            return sorted(dangling)

        return await self._collect(run)

    async def delete_links(
        self, repository: str, digests: Collection[str], before: datetime
    ) -> list[str]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[str]:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return []
            here = repository_blobs.c.repository_id == repository_id
            candidates = _lock_older(
                conn,
                repository_blobs.c.digest,
                repository_blobs.c.created_at,
                here,
                digests,
                before,
            )
            candidates -= _matching(
                conn,
                manifest_references.c.digest,
                candidates,
                manifest_references.c.repository_id == repository_id,
            )
            candidates -= _matching(
                conn, manifests.c.digest, candidates, manifests.c.repository_id == repository_id
            )
            for chunk in chunks(candidates):
                conn.execute(
                    delete(repository_blobs).where(here, repository_blobs.c.digest.in_(chunk))
                )
            return sorted(candidates)

        return await self._collect(run)

    async def drop_reservations(self, before: datetime) -> int:
        before = before.astimezone(UTC)
        result = await self._collect(
            lambda conn: conn.execute(
                delete(blob_reservations).where(blob_reservations.c.created_at < before)
            )
        )
        return result.rowcount

    async def mark_blobs(
        self, digests: Collection[str], before: datetime, token: str
    ) -> dict[str, int]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> dict[str, int]:
            stamp = now()
            garbage_age = or_(
                and_(blobs.c.state != BlobState.DELETING, blobs.c.created_at < before),
                and_(blobs.c.state == BlobState.DELETING, blobs.c.marked_at < stamp - MARK_TTL),
            )
            found: dict[str, int] = {}
            for chunk in chunks(digests):
                found.update(
                    conn.execute(
                        select(blobs.c.digest, blobs.c.size)
                        .where(blobs.c.digest.in_(chunk), garbage_age)
                        .order_by(blobs.c.digest)
                        .with_for_update(skip_locked=True)
                    ).all()
                )
            used = (
                _matching(conn, repository_blobs.c.digest, found)
                | _matching(conn, manifest_references.c.digest, found)
                | _matching(conn, blob_reservations.c.digest, found)
            )
            marked = {digest: size for digest, size in found.items() if digest not in used}
            for chunk in chunks(marked):
                conn.execute(
                    update(blobs)
                    .where(blobs.c.digest.in_(chunk))
                    .values(state=BlobState.DELETING, marked_at=stamp, marked_by=token)
                )
            return marked

        return await self._collect(run)

    async def claim_orphans(self, sizes: Mapping[str, int], token: str) -> list[str]:
        def run(conn: Connection) -> list[str]:
            stamp = now()
            return [
                digest
                for digest in sorted(sizes)
                if insert_missing(
                    conn,
                    blobs,
                    digest=digest,
                    size=sizes[digest],
                    created_at=stamp,
                    state=BlobState.DELETING,
                    marked_at=stamp,
                    marked_by=token,
                )
            ]

        return await self._collect(run)

    async def forget_blobs(self, digests: Collection[str], token: str) -> None:
        def run(conn: Connection) -> None:
            for chunk in chunks(digests):
                conn.execute(
                    delete(blobs).where(
                        blobs.c.digest.in_(chunk),
                        blobs.c.state == BlobState.DELETING,
                        blobs.c.marked_by == token,
                    )
                )

        await self._collect(run)

    async def expire_uploads(self, ids: Collection[str], before: datetime) -> list[str]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> list[str]:
            expired: list[str] = []
            for chunk in chunks(ids):
                expired += conn.scalars(
                    delete(uploads)
                    .where(uploads.c.id.in_(chunk), uploads.c.updated_at < before)
                    .returning(uploads.c.id)
                )
            return sorted(expired)

        return await self._collect(run)
