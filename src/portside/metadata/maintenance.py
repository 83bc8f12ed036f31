"""What `portside verify`, `backup` and `restore` read and repair: blob records page by page,
references a repository cannot read, and taking a blob that cannot be served out of the registry.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, exists, select, update

from portside.metadata.base import (
    BlobRecord,
    BlobState,
    Condemned,
    ReferenceKind,
    ReferenceRecord,
)
from portside.metadata.engine import Database
from portside.metadata.manifests import delete_manifest_rows
from portside.metadata.statements import now, utc
from portside.metadata.tables import (
    blobs,
    cached_manifests,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
)


class SqlMaintenance(Database):
    async def list_blobs(self, after: str | None, limit: int) -> list[BlobRecord]:
        query = select(blobs.c.digest, blobs.c.size, blobs.c.state, blobs.c.created_at)
        if after is not None:
            query = query.where(blobs.c.digest > after)
        query = query.order_by(blobs.c.digest).limit(limit)

        def run(conn: Connection) -> list[BlobRecord]:
            return [
                BlobRecord(row[0], row[1], BlobState(row[2]), utc(row[3]))
                for row in conn.execute(query)
            ]

        return await self._read(run)

    async def unreadable_references(self, limit: int) -> list[ReferenceRecord]:
        r = manifest_references.c
        linked = (
            select(repository_blobs.c.digest)
            .join(blobs, blobs.c.digest == repository_blobs.c.digest)
            .where(
                repository_blobs.c.repository_id == r.repository_id,
                repository_blobs.c.digest == r.digest,
                blobs.c.state == BlobState.STORED,
            )
        )
        child = select(manifests.c.digest).where(
            manifests.c.repository_id == r.repository_id, manifests.c.digest == r.digest
        )
        # A pull-through cache records an upstream's manifest before it has fetched any of
        # what the manifest references: those fill as they are pulled.
        cached = select(cached_manifests.c.digest).where(
            cached_manifests.c.repository_id == r.repository_id,
            cached_manifests.c.digest == r.manifest_digest,
        )
        query = (
            select(repositories.c.name, r.manifest_digest, r.digest, r.kind)
            .join(repositories, repositories.c.id == r.repository_id)
            .where(
                ~exists(cached),
                ((r.kind == ReferenceKind.BLOB) & ~exists(linked))
                | ((r.kind == ReferenceKind.MANIFEST) & ~exists(child)),
            )
            .order_by(repositories.c.name, r.manifest_digest, r.digest)
            .limit(limit)
        )

        def run(conn: Connection) -> list[ReferenceRecord]:
            return [
                ReferenceRecord(row[0], row[1], row[2], ReferenceKind(row[3]))
                for row in conn.execute(query)
            ]

        return await self._read(run)

    async def condemn_blob(self, digest: str, token: str) -> Condemned:
        def run(conn: Connection) -> Condemned:
            found = conn.execute(
                update(blobs)
                .where(blobs.c.digest == digest)
                .values(state=BlobState.DELETING, marked_at=now(), marked_by=token)
                .returning(blobs.c.digest)
            ).first()
            if found is None:
                return Condemned(False, (), ())
            # Links first: deleting a manifest's rows deletes the link of its own digest too.
            unlinked = conn.scalars(
                delete(repository_blobs)
                .where(repository_blobs.c.digest == digest)
                .returning(repository_blobs.c.repository_id)
            ).all()
            owners = conn.execute(
                select(manifests.c.repository_id, repositories.c.name)
                .join(repositories, repositories.c.id == manifests.c.repository_id)
                .where(manifests.c.digest == digest)
            ).all()
            for repository_id, _ in owners:
                delete_manifest_rows(conn, repository_id, digest)
            names = conn.scalars(
                select(repositories.c.name).where(repositories.c.id.in_(unlinked))
            ).all()
            deleted = {name for _, name in owners}
            return Condemned(True, tuple(sorted(set(names) - deleted)), tuple(sorted(deleted)))

        return await self._write(run)
