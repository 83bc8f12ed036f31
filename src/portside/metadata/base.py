"""The metadata store interface and the records it returns (frozen dataclasses, never ORM rows).

Tags, manifests, blob links and upload sessions live here and only here; blob bytes live in storage.
Every backend passes the one suite in tests/contract/metadata_store.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Conflict(Exception):
    """A write lost a race: the row changed since it was read."""


class ReferenceKind(StrEnum):
    BLOB = "blob"
    MANIFEST = "manifest"


@dataclass(frozen=True, slots=True)
class Reference:
    """A digest a manifest points at: a blob (config, layer) or a child manifest (of an index)."""

    digest: str
    kind: ReferenceKind


@dataclass(frozen=True, slots=True)
class Manifest:
    repository: str
    digest: str
    media_type: str
    size: int
    artifact_type: str | None = None
    subject: str | None = None
    annotations: str | None = None  # JSON text of the manifest's annotations, as pushed


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository: str
    offset: int
    # sha256 of the first hashed_offset bytes, so that the last request of an upload can skip
    # re-reading the data when it lands in another process.
    hashed_offset: int
    hashed_digest: str | None
    created_at: datetime
    updated_at: datetime
    # The storage key of the last chunk claimed, which may not have joined the upload's bytes yet
    # when the process that claimed it died; the next request completes it.
    part: str | None = None


class MetadataStore(Protocol):
    """Repositories, blob links, manifests, tags and upload sessions.

    Names and digests arrive validated. Methods are atomic: each is one transaction.
    """

    async def close(self) -> None: ...

    # blobs
    async def blob_size(self, digest: str) -> int | None:
        """The size of a blob stored in the registry, linked anywhere or nowhere."""

    async def linked_blob_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob readable in repository (pushed, mounted or a manifest there)."""

    async def link_blob(self, repository: str, digest: str, size: int) -> None:
        """Record the blob (if new) and link it to repository, creating the repository."""

    async def complete_upload(self, id: str, repository: str, digest: str, size: int) -> None:
        """In one transaction: link_blob(repository, digest, size) and end the upload session
        (if it is still there)."""

    async def unlink_blob(self, repository: str, digest: str) -> bool:
        """Remove the link; False if there was none."""

    # upload sessions
    async def create_upload(self, id: str, repository: str) -> Upload: ...

    async def get_upload(self, repository: str, id: str) -> Upload | None: ...

    async def advance_upload(
        self,
        id: str,
        expected_offset: int,
        offset: int,
        hashed_digest: str | None,
        part: str | None = None,
    ) -> Upload:
        """Move the upload from expected_offset to offset; Conflict if it is no longer at
        expected_offset or is gone. hashed_digest is the sha256 of bytes [0, offset), if known;
        part, the key of the chunk that holds bytes [expected_offset, offset)."""

    async def delete_upload(self, id: str) -> bool: ...

    # manifests and tags
    async def missing_references(
        self, repository: str, references: Sequence[Reference]
    ) -> list[str]:
        """The digests among references that repository cannot read."""

    async def put_manifest(
        self, manifest: Manifest, references: Sequence[Reference], tag: str | None
    ) -> None:
        """Store the manifest's record and references, link its digest as a blob, point tag at
        it. Storing the same manifest again is fine; Conflict if a concurrent write interfered."""

    async def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """By digest when reference contains a colon, else by tag."""

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        """Remove the manifest and every tag pointing at it; False if it was not there."""

    async def delete_tag(self, repository: str, tag: str) -> bool: ...

    async def repository_exists(self, repository: str) -> bool: ...

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str]:
        """Tags in lexical (code point) order after last, at most n of them."""

    async def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        """Names of repositories holding at least one manifest, in lexical (code point) order
        after last, at most n of them."""

    async def list_referrers(
        self, repository: str, subject: str, artifact_type: str | None
    ) -> list[Manifest]:
        """Manifests in repository whose subject is the given digest."""
