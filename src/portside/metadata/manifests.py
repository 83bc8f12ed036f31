"""Manifests, their references and tags, as a push, a pull and a delete read and write them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table, and_, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql.base import Executable

from portside.metadata.base import (
    QUIET,
    Claim,
    Conflict,
    Journal,
    Manifest,
    Missing,
    NamespaceLimits,
    Reference,
    ReferenceKind,
    TagFilter,
    TagLocked,
)
from portside.metadata.blobs import record_blob
from portside.metadata.engine import Database, lost_race
from portside.metadata.journal import moved, write_journal
from portside.metadata.namespace_limits import check_limits, lock_usage
from portside.metadata.prepared import Prepared
from portside.metadata.statements import (
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


_HELD: dict[tuple[str, tuple[str, ...]], Prepared] = {}


def _hold(conn: Connection, table: Table, key: tuple[str, ...], **values: Any) -> bool:
    """Insert a row unless it is there, then hold it (FOR SHARE) until the transaction ends, so
    that no concurrent transaction deletes it meanwhile; whether this transaction inserted it.
    A row a concurrent transaction deleted between the two steps is inserted again. key names
    the columns that find the row."""
    held = _HELD.get((table.name, key))
    if held is None:
        held = _HELD[(table.name, key)] = Prepared(
            select(*table.primary_key)
            .where(*(table.c[column] == bindparam(column) for column in key))
            .with_for_update(read=True)
        )
    for _ in range(10):
        inserted = insert_missing(conn, table, **values)
        if held.run(conn, **{column: values[column] for column in key}).first() is not None:
            return inserted
    raise Conflict(f"{table.name}: deleted and inserted again ten times")


def _references_query(table: Table, owner: str, digest: str, hold: bool) -> Prepared:
    query = select(table.c[digest]).where(
        table.c[owner] == bindparam("repository_id"), table.c[digest] == bindparam("digest")
    )
    return Prepared(query.with_for_update(read=True) if hold else query)


# Per kind of reference, the row that makes it readable in the repository: looked up, or held.
_REFERENCED = {
    ReferenceKind.BLOB: (repository_blobs, "repository_id", "digest"),
    ReferenceKind.MANIFEST: (manifests, "repository_id", "digest"),
}
_FIND_REFERENCE = {
    kind: _references_query(*where, hold=False) for kind, where in _REFERENCED.items()
}
_HOLD_REFERENCE = {
    kind: _references_query(*where, hold=True) for kind, where in _REFERENCED.items()
}


def _absent(
    conn: Connection,
    repository_id: int,
    references: Sequence[Reference],
    queries: Mapping[ReferenceKind, Prepared],
) -> list[str]:
    """The digests of references that are not readable in the repository, each looked up in
    the order of digests (so that rows are locked in one order)."""
    missing = set()
    for kind, digest in sorted({(r.kind, r.digest) for r in references}, key=lambda r: r[1]):
        if queries[kind].run(conn, repository_id=repository_id, digest=digest).first() is None:
            missing.add(digest)
    return sorted(missing)


def _hold_references(
    conn: Connection, repository_id: int, references: Sequence[Reference]
) -> list[str]:
    """Hold (FOR SHARE) the links of the blobs and the child manifests that references name, so
    that no collector removes them before the transaction ends; the digests not found."""
    return _absent(conn, repository_id, references, _HOLD_REFERENCE)


_ADD_REFERENCE = Prepared(
    insert(manifest_references).values(
        repository_id=bindparam("repository_id"),
        manifest_digest=bindparam("manifest_digest"),
        digest=bindparam("digest"),
        kind=bindparam("kind"),
    )
)
_UNCACHE_TAG = Prepared(
    delete(cached_tags).where(
        cached_tags.c.repository_id == bindparam("repository_id"),
        cached_tags.c.name == bindparam("name"),
    )
)
_TAGGED = Prepared(
    select(tags.c.digest)
    .where(tags.c.repository_id == bindparam("repository_id"), tags.c.name == bindparam("name"))
    .with_for_update()
)


def store_manifest(
    conn: Connection,
    repository_id: int,
    manifest: Manifest,
    references: Sequence[Reference],
    tag: str | None,
    reservation: Claim,
    track_tag: bool = False,
) -> str | None:
    """Record the manifest's bytes as a stored blob (ending reservation), the manifest and its
    references, link it to the repository and point tag at it. With track_tag, the digest the
    tag pointed at before, if the push moved it from another manifest."""
    record_blob(conn, manifest.digest, reservation, manifest.size)
    # Held, so that a collector deleting an untagged manifest cannot take the record or
    # the link away from under a tag or a push of the same manifest.
    inserted = _hold(
        conn,
        manifests,
        ("repository_id", "digest"),
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
        ("repository_id", "digest"),
        repository_id=repository_id,
        digest=manifest.digest,
        created_at=now(),
    )
    if inserted:
        for r in {r.digest: r for r in references}.values():
            _ADD_REFERENCE.run(
                conn,
                repository_id=repository_id,
                manifest_digest=manifest.digest,
                digest=r.digest,
                kind=r.kind.value,
            )
    if tag is None:
        return None
    previous = None
    if track_tag:
        previous = _TAGGED.run(conn, repository_id=repository_id, name=tag).scalar()
    _set_tag(conn, repository_id, tag, manifest.digest)
    return previous if previous != manifest.digest else None


def _set_tag_statement(dialect: Dialect) -> Executable:
    return (
        upsert(dialect, tags)
        .values(
            repository_id=bindparam("repository_id"),
            name=bindparam("name"),
            digest=bindparam("digest"),
            updated_at=bindparam("updated_at"),
        )
        .on_conflict_do_update(
            index_elements=[tags.c.repository_id, tags.c.name],
            set_={"digest": bindparam("digest"), "updated_at": bindparam("updated_at")},
        )
    )


_SET_TAG = Prepared(_set_tag_statement)


def _set_tag(conn: Connection, repository_id: int, tag: str, digest: str) -> None:
    _SET_TAG.run(conn, repository_id=repository_id, name=tag, digest=digest, updated_at=now())


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

        def run(conn: Connection) -> list[str]:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return sorted({r.digest for r in references})
            return _absent(conn, repository_id, references, _FIND_REFERENCE)

        return await self._read(run)

    async def put_manifest(
        self,
        manifest: Manifest,
        references: Sequence[Reference],
        tag: str | None,
        reservation: Claim,
        journal: Journal = QUIET,
        immutable: bool = False,
        limits: NamespaceLimits | None = None,
    ) -> None:
        def run(conn: Connection) -> None:
            # Locked before any other row, as the triggers that keep it do (0013).
            before = None if limits is None else lock_usage(conn, limits.namespace)
            repository_id = ensure_repository(conn, manifest.repository)
            if immutable and tag is not None:
                # Locked (FOR UPDATE) until the commit: a concurrent first push of the tag
                # waits, then finds it here.
                current = _TAGGED.run(conn, repository_id=repository_id, name=tag).scalar()
                if current is not None and current != manifest.digest:
                    raise TagLocked(tag, current)
            missing = _hold_references(conn, repository_id, references)
            if missing:
                raise Missing(missing)
            track = bool(journal.audit)
            previous = store_manifest(
                conn, repository_id, manifest, references, tag, reservation, track
            )
            if tag is not None:
                # Pushed here: no longer a cached tag, whatever its upstream holds under it.
                _UNCACHE_TAG.run(conn, repository_id=repository_id, name=tag)
            if limits is not None and before is not None:
                check_limits(conn, limits, before)
            write_journal(conn, journal if previous is None else moved(journal, previous))

        with races_as_conflicts(manifest.digest):
            await self._write(run)

    async def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        query = _MANIFEST_BY_DIGEST if ":" in reference else _MANIFEST_BY_TAG
        row = await self._first(query, repository=repository, reference=reference)
        return None if row is None else manifest_record(repository, row)

    async def delete_manifest(
        self,
        repository: str,
        digest: str,
        journal: Journal = QUIET,
        protected: TagFilter | None = None,
    ) -> bool:
        def run(conn: Connection) -> bool:
            repository_id = find_repository(conn, repository)
            if repository_id is None:
                return False
            if protected is not None:
                on = select(tags.c.name).where(
                    tags.c.repository_id == repository_id, tags.c.digest == digest
                )
                for tag in conn.scalars(on.with_for_update()):
                    if protected(tag):
                        raise TagLocked(tag, digest)
            if not delete_manifest_rows(conn, repository_id, digest):
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
