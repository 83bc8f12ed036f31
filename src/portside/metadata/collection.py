"""What garbage collection reads and deletes (registry/gc.py has the argument for its safety).

Every deletion locks its candidates, skipping those a writer holds, and re-checks them in later
statements, which see what such writers committed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    bindparam,
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
    Journal,
    LinkRecord,
    ManifestRecord,
    Notice,
    ReferenceKind,
    ReferenceRecord,
    ReservationRecord,
    Snapshot,
    TagRecord,
)
from portside.metadata.engine import Database
from portside.metadata.journal import like, write_audit, write_journal
from portside.metadata.pairs import Pair, by_name, pair_chunks, pairs, pairs_of, repository_ids
from portside.metadata.statements import CHUNK, chunks, insert_missing, now, upsert, utc
from portside.metadata.tables import (
    BLOB_FORGETS_ROW,
    blob_forgets,
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
    table: Table,
    digest: ColumnElement[str],
    created_at: ColumnElement[datetime],
    rows: Collection[Pair],
    before: datetime,
) -> set[Pair]:
    """Those of rows (repository id, digest) whose rows in table were created before `before`,
    locked for this transaction; rows a concurrent writer holds are skipped, not waited for."""
    found: set[Pair] = set()
    for chunk in pair_chunks(rows):
        wanted = pairs(conn, chunk)
        found.update(
            (repository_id, found_digest)
            for repository_id, found_digest in conn.execute(
                select(table.c.repository_id, digest)
                .join(
                    wanted,
                    and_(
                        table.c.repository_id == wanted.c.repository_id,
                        digest == wanted.c.digest,
                    ),
                )
                .where(created_at < before)
                .order_by(table.c.repository_id, digest)
                .with_for_update(skip_locked=True, of=table)
            )
        )
    return found


def _held(
    conn: Connection,
    table: Table,
    digest: ColumnElement[str],
    rows: Collection[Pair],
    *,
    by_digest: bool = False,
) -> set[Pair]:
    """Those of rows (repository id, digest) that table holds. by_digest: looked up through the
    digest's index, not by repository_id, the leading column of the primary key, which would
    walk every row of the repository (manifest_references)."""
    repository_id = table.c.repository_id + 0 if by_digest else table.c.repository_id
    found: set[Pair] = set()
    for chunk in pair_chunks(rows):
        wanted = pairs(conn, chunk)
        held = exists().where(repository_id == wanted.c.repository_id, digest == wanted.c.digest)
        query = select(wanted.c.repository_id, wanted.c.digest).where(held)
        found.update(
            (repository_id, found_digest) for repository_id, found_digest in conn.execute(query)
        )
    return found


def _delete(
    conn: Connection, table: Table, digest: ColumnElement[str], rows: Collection[Pair]
) -> None:
    """Delete the rows of table with these (repository id, digest): one statement, run for all."""
    if rows:
        conn.execute(
            delete(table).where(
                table.c.repository_id == bindparam("pair_repository"),
                digest == bindparam("pair_digest"),
            ),
            [{"pair_repository": r, "pair_digest": d} for r, d in sorted(rows)],
        )


def _still_needed(conn: Connection, candidates: set[Pair], keep_referrers: bool) -> set[Pair]:
    """The candidates (repository id, manifest digest) that a manifest outside them needs, or
    that are tagged."""
    needed = _held(conn, tags, tags.c.digest, candidates)
    r = manifest_references.c
    for chunk in pair_chunks(candidates):
        wanted = pairs(conn, chunk)
        parents = conn.execute(
            select(r.repository_id, r.digest, r.manifest_digest)
            .join(
                wanted,
                # `+ 0`: by digest (a manifest has few parents), as _held's by_digest.
                and_(r.repository_id + 0 == wanted.c.repository_id, r.digest == wanted.c.digest),
            )
            .where(r.kind == ReferenceKind.MANIFEST)
        )
        needed |= {
            (repository_id, child)
            for repository_id, child, parent in parents
            if (repository_id, parent) not in candidates
        }
    if keep_referrers:
        subjects: list[tuple[int, str, str]] = []
        for chunk in pair_chunks(candidates):
            wanted = pairs(conn, chunk)
            query = (
                select(manifests.c.repository_id, manifests.c.digest, manifests.c.subject)
                .join(
                    wanted,
                    and_(
                        manifests.c.repository_id == wanted.c.repository_id,
                        manifests.c.digest == wanted.c.digest,
                    ),
                )
                .where(manifests.c.subject.is_not(None))
            )
            subjects += [
                (found, referrer, subject) for found, referrer, subject in conn.execute(query)
            ]
        outside = {
            (repository_id, subject)
            for repository_id, _, subject in subjects
            if (repository_id, subject) not in candidates
        }
        kept = _held(conn, manifests, manifests.c.digest, outside)
        needed |= {
            (repository_id, referrer)
            for repository_id, referrer, subject in subjects
            if (repository_id, subject) in kept
        }
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
        garbage: Mapping[str, Collection[str]],
        before: datetime,
        keep_referrers: bool,
        audit: AuditEntry | None = None,
        notices: Callable[[str, str], Sequence[Notice]] | None = None,
    ) -> dict[str, list[str]]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> dict[str, list[str]]:
            names, wanted = pairs_of(conn, garbage)
            m = manifests.c
            candidates = _lock_older(conn, manifests, m.digest, m.created_at, wanted, before)
            # Keeping one candidate may make it need others (its children, its referrers).
            while needed := _still_needed(conn, candidates, keep_referrers):
                candidates -= needed
            _delete(conn, manifests, m.digest, candidates)
            _delete(conn, manifest_references, manifest_references.c.manifest_digest, candidates)
            _delete(conn, repository_blobs, repository_blobs.c.digest, candidates)
            _delete(conn, cached_manifests, cached_manifests.c.digest, candidates)
            deleted = by_name(names, candidates)
            for repository, digests in deleted.items():
                write_audit(conn, like(audit, repository, digests))
                if notices is not None:
                    told = (n for digest in digests for n in notices(repository, digest))
                    write_journal(conn, Journal(tuple(told)))
            return deleted

        return await self._collect(run)

    async def delete_dangling_tags(self, repositories: Collection[str]) -> dict[str, list[str]]:
        def run(conn: Connection) -> dict[str, list[str]]:
            names = repository_ids(conn, repositories)
            has_manifest = exists().where(
                manifests.c.repository_id == tags.c.repository_id,
                manifests.c.digest == tags.c.digest,
            )
            ids = sorted(names)
            dangling: list[tuple[int, str]] = []
            for start in range(0, len(ids), CHUNK):
                dangling += conn.execute(
                    delete(tags)
                    .where(tags.c.repository_id.in_(ids[start : start + CHUNK]), ~has_manifest)
                    .returning(tags.c.repository_id, tags.c.name)
                )
            return by_name(names, dangling)

        return await self._collect(run)

    async def delete_links(
        self, links: Mapping[str, Collection[str]], before: datetime
    ) -> dict[str, list[str]]:
        before = before.astimezone(UTC)

        def run(conn: Connection) -> dict[str, list[str]]:
            names, wanted = pairs_of(conn, links)
            rb = repository_blobs.c
            candidates = _lock_older(
                conn, repository_blobs, rb.digest, rb.created_at, wanted, before
            )
            r = manifest_references.c
            candidates -= _held(conn, manifest_references, r.digest, candidates, by_digest=True)
            candidates -= _held(conn, manifests, manifests.c.digest, candidates)
            _delete(conn, repository_blobs, rb.digest, candidates)
            return by_name(names, candidates)

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
            forgotten = 0
            for chunk in chunks(digests):
                forgotten += conn.execute(
                    delete(blobs).where(
                        blobs.c.digest.in_(chunk),
                        blobs.c.state == BlobState.DELETING,
                        blobs.c.marked_by == token,
                    )
                ).rowcount
            if forgotten:  # base.py Unreserved: records made meanwhile without a reservation fail
                conn.execute(
                    upsert(conn.dialect, blob_forgets)
                    .values(id=BLOB_FORGETS_ROW, forgotten=forgotten)
                    .on_conflict_do_update(
                        index_elements=[blob_forgets.c.id],
                        set_={"forgotten": blob_forgets.c.forgotten + forgotten},
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
