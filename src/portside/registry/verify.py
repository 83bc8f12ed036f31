"""Checking what the registry stores against what it records: every stored blob's bytes against
their digest and size, every manifest's references against what its repository can read. With
repair, what cannot be served is taken out of the registry, so that clients get a clean 404
(BLOB_UNKNOWN, MANIFEST_UNKNOWN) instead of a corrupt layer, and a push of it stores it anew.

Safe while the registry serves: a blob is taken out the way a collector deletes one (marked in
its record, so that writers of the digest wait, then its bytes deleted, then its record).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from portside.metadata.base import BlobRecord, BlobState, MaintenanceStore
from portside.registry import keys
from portside.registry.gc import Progress
from portside.registry.ingest import hash_object
from portside.registry.names import Digest
from portside.storage.base import BlobStore, NotFound

PAGE: Final = 500
# Blobs hashed at once: local files hash in threads, so two cores stay busy while reads wait.
CONCURRENCY: Final = 4
# Unreadable references listed at most: past a few thousand, the list says nothing more.
REFERENCES_SHOWN: Final = 10_000


class Fault(StrEnum):
    MISSING = "missing"  # a stored blob whose bytes are gone
    CORRUPT = "corrupt"  # bytes that do not hash to their digest, or not of the recorded size
    UNREADABLE = "unreadable"  # a manifest references what its repository cannot read


@dataclass(frozen=True, slots=True)
class Finding:
    fault: Fault
    digest: str
    detail: str
    repository: str | None = None  # for UNREADABLE: where the referencing manifest is
    manifest: str | None = None  # for UNREADABLE: the referencing manifest
    repaired: str | None = None  # what repair did about it


@dataclass(slots=True)
class Report:
    blobs: int = 0  # stored blobs checked
    bytes: int = 0  # their recorded sizes, summed
    findings: list[Finding] = field(default_factory=list)

    def of(self, fault: Fault) -> list[Finding]:
        return [f for f in self.findings if f.fault is fault]

    def summary(self) -> str:
        counts = [f"{len(self.of(fault))} {fault}" for fault in Fault if self.of(fault)]
        checked = f"checked {self.blobs:,} blobs ({self.bytes:,} bytes)"
        return f"{checked}: {', '.join(counts) or 'all good'}"


class _Silent:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


async def check_blob(storage: BlobStore, record: BlobRecord) -> Finding | None:
    """What is wrong with a stored blob's bytes, if anything."""
    digest = Digest.parse(record.digest)
    key = keys.blob(digest)
    try:
        size = await storage.stat(key)
        if size != record.size:
            detail = f"{size} bytes, recorded as {record.size}"
            return Finding(Fault.CORRUPT, record.digest, detail)
        actual = await hash_object(storage, key, digest.algorithm)
    except NotFound:
        return Finding(Fault.MISSING, record.digest, f"no object at {key}")
    if actual != digest.encoded:
        return Finding(Fault.CORRUPT, record.digest, f"hashes to {digest.algorithm}:{actual}")
    return None


async def take_out(storage: BlobStore, metadata: MaintenanceStore, finding: Finding) -> Finding:
    """finding's blob taken out of the registry: unlinked everywhere, its manifests deleted, its
    bytes and record deleted."""
    token = uuid.uuid4().hex
    condemned = await metadata.condemn_blob(finding.digest, token)
    await storage.delete(keys.blob(Digest.parse(finding.digest)))
    await metadata.forget_blobs([finding.digest], token)
    done = []
    if condemned.unlinked:
        done.append("unlinked from " + ", ".join(condemned.unlinked))
    if condemned.manifests:
        done.append("manifest deleted in " + ", ".join(condemned.manifests))
    return replace(finding, repaired="; ".join(done) or "deleted (linked nowhere)")


class Verifier:
    def __init__(
        self, storage: BlobStore, metadata: MaintenanceStore, concurrency: int = CONCURRENCY
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._concurrency = concurrency

    async def verify(self, repair: bool = False, progress: Progress | None = None) -> Report:
        """Check every stored blob, then every manifest's references (after repairs, so that
        manifests left without a blob show)."""
        progress = progress or _Silent()
        report = Report()
        progress.start("checking blobs", None)
        after: str | None = None
        while page := await self._metadata.list_blobs(after, PAGE):
            after = page[-1].digest
            stored = [r for r in page if r.state is BlobState.STORED]
            for finding in await self._check(stored, progress):
                report.findings.append(
                    await take_out(self._storage, self._metadata, finding) if repair else finding
                )
            report.blobs += len(stored)
            report.bytes += sum(r.size for r in stored)
        progress.start("checking references", None)
        for reference in await self._metadata.unreadable_references(REFERENCES_SHOWN):
            what = "child manifest" if reference.kind == "manifest" else "blob"
            report.findings.append(
                Finding(
                    Fault.UNREADABLE,
                    reference.digest,
                    f"{what} not readable in the repository",
                    reference.repository,
                    reference.manifest,
                )
            )
        return report

    async def _check(self, records: Sequence[BlobRecord], progress: Progress) -> list[Finding]:
        limit = asyncio.Semaphore(self._concurrency)

        async def one(record: BlobRecord) -> Finding | None:
            async with limit:
                found = await check_blob(self._storage, record)
            progress.advance(record.size)
            return found

        found = await asyncio.gather(*(one(r) for r in records))
        return [f for f in found if f is not None]
