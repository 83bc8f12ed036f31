"""Manifests, their references and tags, as a push, a pull and a delete read and write them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from portside.metadata.base import (
    QUIET,
    Conflict,
    Journal,
    Manifest,
    Missing,
    Reference,
    ReferenceKind,
)
from portside.metadata.blobs import record_blob
from portside.metadata.engine import Database, lost_race
from portside.metadata.journal import moved, write_journal
from portside.metadata.prepared import Prepared
from portside.metadata.statements import (
    chunks,
    ensure_repository,
    find_repository,
    insert_missing,
    now,
    upsert,
)
from portside.metadata.tables import (
    cached_manifests,
    cached_tags,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
)

MANIFEST_COLUMNS = (
    manifests.c.digest,
    manifests.c.media_type,
    manifests.c.size,
    manifests.c.artifact_type,
    manifests.c.subject,
    manifests.c.annotations,
    manifests.c.description,
)


# The manifest a GET or HEAD names, by digest or by tag: the hottest read of all.
_MANIFEST_BY_DIGEST = Prepared(
    select(*MANIFEST_COLUMNS)
    .join(repositories, repositories.c.id == manifests.c.repository_id)
    .where(
        repositories.c.name == bindparam("repository"),
        manifests.c.digest == bindparam("reference"),
    )
)
_MANIFEST_BY_TAG = Prepared(
    select(*MANIFEST_COLUMNS)
    .select_from(tags)
    .join(repositories, repositories.c.id == tags.c.repository_id)
    .join(
        manifests,
        and_(
            manifests.c.repository_id == tags.c.repository_id,
            manifests.c.digest == tags.c.digest,
        ),
    )
    .where(repositories.c.name == bindparam("repository"), tags.c.name == bindparam("reference"))
)


def manifest_record(repository: str, row: Any) -> Manifest:
    """The Manifest of a row of MANIFEST_COLUMNS."""
    return Manifest(repository, *row)


def _hold(conn: Connection, table: Table, where: ColumnElement[bool], **values: Any) -> bool:
    """Insert a row unless it is there, then hold it (FOR SHARE) until the transaction ends, so
    that no concurrent transaction deletes it meanwhile; whether this transaction inserted it.
    A row a concurrent transaction deleted between the two steps is inserted again."""
    for _ in range(10):
        inserted = insert_missing(conn, table, **values)
        held = select(*table.primary_key).where(where).with_for_update(read=True)
        if conn.execute(held).first() is not None:
            return inserted
    raise Conflict(f"{table.name}: deleted and inserted again ten times")


def _hold_references(
    conn: Connection, repository_id: int, references: Sequence[Reference]
) -> list[str]:
    """Hold (FOR SHARE) the links of the blobs and the child manifests that references name, so
    that no collector removes them before the transaction ends; the digests not found."""
    wanted = {kind: {r.digest for r in references if r.kind is kind} for kind in ReferenceKind}
    tables = {
        ReferenceKind.BLOB: (repository_blobs.c.repository_id, repository_blobs.c.digest),
        ReferenceKind.MANIFEST: (manifests.c.repository_id, manifests.c.digest),
    }
    missing: set[str] = set()
    for kind, (owner, digest) in tables.items():
        found: set[str] = set()
        for chunk in chunks(wanted[kind]):
            found.update(
                conn.scalars(
                    select(digest)
                    .where(owner == repository_id, digest.in_(chunk))
                    .order_by(digest)
                    .with_for_update(read=True)
                )
            )
        missing |= wanted[kind] - found
    return sorted(missing)


def store_manifest(
    conn: Connection,
    repository_id: int,
    manifest: Manifest,
    references: Sequence[Reference],
    tag: str | None,
    reservation: str,
    track_tag: bool = False,
) -> str | None:
    """Record the manifest's bytes as a stored blob (ending reservation), the manifest and its
    references, link it to the repository and point tag at it. With track_tag, the digest the
    tag pointed at before, if the push moved it from another manifest."""
    record_blob(conn, manifest.digest, reservation)
    # Held, so that a collector deleting an untagged manifest cannot take the record or
    # the link away from under a tag or a push of the same manifest.
    inserted = _hold(
        conn,
        manifests,
        and_(
            manifests.c.repository_id == repository_id,
            manifests.c.digest == manifest.digest,
        ),
        repository_id=repository_id,
        digest=manifest.digest,
        media_type=manifest.media_type,
        size=manifest.size,
        artifact_type=manifest.artifact_type,
        subject=manifest.subject,
        annotations=manifest.annotations,
        description=manifest.description,
        created_at=now(),
    )
    _hold(
        conn,
        repository_blobs,
        and_(
            repository_blobs.c.repository_id == repository_id,
            repository_blobs.c.digest == manifest.digest,
        ),
        repository_id=repository_id,
        digest=manifest.digest,
        created_at=now(),
    )
    if inserted and references:
        conn.execute(
            insert(manifest_references),
            [
                {
                    "repository_id": repository_id,
                    "manifest_digest": manifest.digest,
                    "digest": r.digest,
                    "kind": r.kind.value,
                }
                for r in {r.digest: r for r in references}.values()
            ],
        )
    if tag is None:
        return None
    previous = None
    if track_tag:
        previous = conn.scalar(
            select(tags.c.digest)
            .where(tags.c.repository_id == repository_id, tags.c.name == tag)
            .with_for_update()
        )
    _set_tag(conn, repository_id, tag, manifest.digest)
    return previous if previous != manifest.digest else None


def _set_tag(conn: Connection, repository_id: int, tag: str, digest: str) -> None:
    stamp = now()
    conn.execute(
        upsert(conn, tags)
        .values(repository_id=repository_id, name=tag, digest=digest, updated_at=stamp)
        .on_conflict_do_update(
            index_elements=[tags.c.repository_id, tags.c.name],
            set_={"digest": digest, "updated_at": stamp},
        )
    )


@contextlib.contextmanager
def races_as_conflicts(digest: str) -> Iterator[None]:
    """Conflict(digest) for a manifest's write that lost a race with another writer."""
    try:
        yield
    except IntegrityError as error:
        raise Conflict(digest) from error
    except OperationalError as error:
        if not lost_race(error):
            raise
        raise Conflict(digest) from error


def delete_manifest_rows(conn: Connection, repository_id: int, digest: str) -> bool:
    """The manifest, its tags, its references, the link of its own digest and its cache row
    (that one even when the manifest is gone already); whether there was a manifest."""
    conn.execute(
        delete(cached_manifests).where(
            cached_manifests.c.repository_id == repository_id,
            cached_manifests.c.digest == digest,
        )
    )
    result = conn.execute(
        delete(manifests).where(
            manifests.c.repository_id == repository_id, manifests.c.digest == digest
        )
    )
    if result.rowcount == 0:
        return False
    conn.execute(delete(tags).where(tags.c.repository_id == repository_id, tags.c.digest == digest))
    conn.execute(
        delete(manifest_references).where(
            manifest_references.c.repository_id == repository_id,
            manifest_references.c.manifest_digest == digest,
        )
    )
    conn.execute(
        delete(repository_blobs).where(
            repository_blobs.c.repository_id == repository_id,
            repository_blobs.c.digest == digest,
        )
    )
    return True


class SqlManifests(Database):
    async def missing_references(
        self, repository: str, references: Sequence[Reference]
    ) -> list[str]:
        if not references:
            return []
        blob_digests = {r.digest for r in references if r.kind is ReferenceKind.BLOB}
        manifest_digests = {r.digest for r in references if r.kind is ReferenceKind.MANIFEST}

        def run(conn: Connection) -> list[str]:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return sorted(blob_digests | manifest_digests)
            found = set(
                conn.scalars(
                    select(repository_blobs.c.digest).where(
                        repository_blobs.c.repository_id == repository_id,
                        repository_blobs.c.digest.in_(blob_digests),
                    )
                )
            ) | set(
                conn.scalars(
                    select(manifests.c.digest).where(
                        manifests.c.repository_id == repository_id,
                        manifests.c.digest.in_(manifest_digests),
                    )
                )
            )
            return sorted((blob_digests | manifest_digests) - found)

        return await self._read(run)

    async def put_manifest(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: str,
        journal: Journal = QUIET,
    ) -> None:
        def run(conn: Connection) -> None:
            repository_id = ensure_repository(conn, manifest.repository)
            missing = _hold_references(conn, repository_id, references)
            if missing:
                raise Missing(missing)
            track = bool(journal.audit)
            previous = store_manifest(
                conn, repository_id, manifest, references, tag, reservation, track
            )
            if tag is not None:
                # Pushed here: no longer a cached tag, whatever its upstream holds under it.
                conn.execute(
                    delete(cached_tags).where(
                        cached_tags.c.repository_id == repository_id, cached_tags.c.name == tag
                    )
                )
            write_journal(conn, journal if previous is None else moved(journal, previous))

        with races_as_conflicts(manifest.digest):
            await self._write(run)

    async def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        query = _MANIFEST_BY_DIGEST if ":" in reference else _MANIFEST_BY_TAG
        row = await self._first(query, repository=repository, reference=reference)
        return None if row is None else manifest_record(repository, row)

    async def delete_manifest(self, repository: str, digest: str, journal: Journal = QUIET) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = find_repository(conn, repository)
            if repository_id is None or not delete_manifest_rows(conn, repository_id, digest):
                return False
            write_journal(conn, journal)
            return True

        return await self._write(run)

    async def delete_tag(self, repository: str, tag: str, journal: Journal = QUIET) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return False
            result = conn.execute(
                delete(tags).where(tags.c.repository_id == repository_id, tags.c.name == tag)
            )
            conn.execute(
                delete(cached_tags).where(
                    cached_tags.c.repository_id == repository_id, cached_tags.c.name == tag
                )
            )
            if result.rowcount == 0:
                return False
            write_journal(conn, journal)
            return True

        return await self._write(run)
