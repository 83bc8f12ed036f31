"""`portside import distribution`: taking a CNCF distribution registry's storage over in place.

Every repository's blob links, manifests and tags are registered through the same steps a push
takes (a blob is reserved, put in place and linked; a manifest goes through ManifestStore.put,
which checks its digest and references), so an import may run while Portside serves, and a
rerun, after a kill or not, finds done what is done and does the rest. A blob's bytes go over
without passing through this process where the source can manage (distribution_tree.py's
Placement: a hard link or a kernel copy between folders, a server-side copy between buckets of
one S3 server), else streamed through it; either way they are hashed once and put at the
blob's key only if they match their digest (between buckets of one server, the version listed
is hashed at the source and that version copied, by its ETag; else the bytes are hashed in
Portside's store, then moved into place). What cannot be imported (a link to no
bytes, bytes that do not match their digest, a manifest Portside does not store, a manifest
whose blobs are missing, a tag on no manifest) is reported and left out, as are blobs that no
repository links (distribution's garbage).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from anyio import to_thread

from portside.metadata.base import CacheStore
from portside.registry import keys
from portside.registry.distribution_tree import DistributionTree, Placement, RepositoryLinks
from portside.registry.errors import (
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    NameInvalid,
)
from portside.registry.gc import Progress
from portside.registry.ingest import check_digest, hash_object, receive, store
from portside.registry.manifest_store import ManifestStore
from portside.registry.manifests import OCI_INDEX, OCI_MANIFEST, parse
from portside.registry.names import Digest, is_tag, parse_name
from portside.storage.base import BlobStore, NotFound

# Blobs taken over at once: hashing runs in threads, so both cores stay busy.
CONCURRENCY: Final = 4
# Repositories whose link files and manifests are read at once, each in a thread of its own.
READERS: Final = 16
# A manifest bigger than this is no manifest Portside would take from a push either.
MANIFEST_MAX: Final = 4 * 1024 * 1024


class Issue(StrEnum):
    BAD_NAME = "bad name"  # a repository or tag name Portside refuses
    BAD_LINK = "bad link"  # a link file that holds no digest, or not its own
    MISSING = "missing"  # a link to a blob with no bytes
    CORRUPT = "corrupt"  # bytes that do not hash to their digest
    UNSUPPORTED = "unsupported"  # a manifest Portside does not store (schema 1, not JSON, ...)
    INCOMPLETE = "incomplete"  # a manifest whose blobs or children are not all importable
    DANGLING_TAG = "dangling tag"  # a tag on a manifest the repository does not have
    ORPHAN = "orphan"  # bytes that no repository links


@dataclass(frozen=True, slots=True)
class Problem:
    issue: Issue
    where: str  # the repository, tag or file
    detail: str


@dataclass(slots=True)
class Report:
    repositories: int = 0
    blobs: int = 0  # blob links registered (or, in a dry run, that would be)
    manifests: int = 0
    tags: int = 0
    taken: int = 0  # blobs whose bytes this run put in place
    taken_bytes: int = 0
    copied: int = 0  # of those, not hard-linked
    placements: dict[Placement, int] = field(default_factory=dict)  # how they went over
    problems: list[Problem] = field(default_factory=list)

    def of(self, issue: Issue) -> list[Problem]:
        return [p for p in self.problems if p.issue is issue]


class _Silent:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


def _guess_type(body: bytes) -> str | None:
    """The media type of a manifest that does not declare one (old OCI manifests need not):
    what distribution itself would take it for."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("mediaType"):
        return None
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


# Per manifest digest, its bytes or what is wrong with them (an issue and its detail).
_Manifests = dict[str, bytes | tuple[Issue, str]]
# A repository's links and manifests, read ahead.
_Read = tuple[RepositoryLinks, _Manifests]


class Target:
    """Where an import goes: Portside's stores."""

    def __init__(self, storage: BlobStore, metadata: CacheStore) -> None:
        self.storage = storage
        self.metadata = metadata
        self.manifests = ManifestStore(storage, metadata)


class DistributionImport:
    def __init__(
        self,
        tree: DistributionTree,
        target: Target | None,
        progress: Progress | None = None,
    ) -> None:
        """target None: a dry run, which checks everything and writes nothing."""
        self._tree = tree
        self._target = target
        self._dry_run = target is None
        self._progress = progress or _Silent()
        self._report = Report()
        # Per blob, across repositories: whether it is in place (True) or cannot be (False).
        self._blobs: dict[str, bool] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)

    @property
    def _into(self) -> Target:
        assert self._target is not None, "a dry run writes nothing"
        return self._target

    async def run(self) -> Report:
        """Import every repository of the tree, then report the blobs none links."""
        repositories = await to_thread.run_sync(self._tree.repositories)
        self._progress.start("importing repositories", len(repositories))
        linked: set[str] = set()
        async for links, manifests in self._read_ahead(repositories):
            linked.update(str(d) for d in (*links.layers, *links.revisions))
            await self._repository(links, manifests)
            self._progress.advance()
        for digest in await to_thread.run_sync(lambda: list(self._tree.blobs())):
            if str(digest) not in linked:
                self._problem(Issue.ORPHAN, str(digest), "linked by no repository")
        return self._report

    async def _read_ahead(self, repositories: list[str]) -> AsyncIterator[_Read]:
        """Each repository's links and manifests in turn, those of the next ones read
        meanwhile, several repositories at once: in a bucket, each file is a GET."""
        pool = ThreadPoolExecutor(READERS, thread_name_prefix="links")
        names = iter(repositories)
        ahead: deque[Future[_Read]] = deque()
        try:
            while True:
                while len(ahead) < 2 * READERS and (name := next(names, None)) is not None:
                    ahead.append(pool.submit(self._read, name))
                if not ahead:
                    return
                yield await asyncio.wrap_future(ahead.popleft())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # an interrupted run waits for none

    def _read(self, name: str) -> _Read:
        links = self._tree.links(name)
        return links, {str(d): self._manifest_bytes(d) for d in links.revisions}

    def _manifest_bytes(self, digest: Digest) -> bytes | tuple[Issue, str]:
        """A manifest's bytes, or what is wrong with them."""
        source, path = self._tree.source, self._tree.blob_path(digest)
        size = source.size(path)
        if size is not None and size > MANIFEST_MAX:
            return Issue.UNSUPPORTED, f"manifest {digest}: over {MANIFEST_MAX} bytes"
        try:
            if size is None:
                raise NotFound(source.where(path))
            return source.read(path)
        except NotFound as error:
            return Issue.MISSING, f"manifest {digest}: no bytes at {error}"

    async def _repository(self, links: RepositoryLinks, manifests: _Manifests) -> None:
        report = self._report
        try:
            name = parse_name(links.name)
        except NameInvalid:
            self._problem(Issue.BAD_NAME, links.name, "not a repository name")
            return
        report.repositories += 1
        for bad in links.bad:
            report.problems.append(Problem(Issue.BAD_LINK, bad.path, bad.reason))
        results = await asyncio.gather(*(self._link(name, d) for d in links.layers))
        readable = {str(d) for d, ok in zip(links.layers, results, strict=True) if ok}
        report.blobs += len(readable)
        imported = await self._import_manifests(name, links.revisions, readable, manifests)
        for tag, digest in sorted(links.tags.items()):
            if not is_tag(tag):
                report.problems.append(Problem(Issue.BAD_NAME, f"{name}:{tag}", "not a tag"))
            elif str(digest) not in imported:
                detail = f"points at {digest}, which is not imported"
                report.problems.append(Problem(Issue.DANGLING_TAG, f"{name}:{tag}", detail))
            else:
                if not self._dry_run:
                    body, content_type = imported[str(digest)]
                    await self._into.manifests.put(name, tag, content_type, body)
                report.tags += 1

    async def _link(self, name: str, digest: Digest) -> bool:
        """Put the blob's bytes in place unless they are, and link it to the repository;
        whether it is (or, in a dry run, would be) readable there now. The first repository
        that links a blob has its bytes checked; the others find it stored."""
        key = str(digest)
        if self._blobs.get(key) is False:
            return False
        source, path = self._tree.source, self._tree.blob_path(digest)
        size = source.size(path)
        try:
            if size is None:
                raise NotFound(source.where(path))
            async with self._limit:
                if not self._dry_run:
                    await store(
                        self._into.metadata,
                        digest,
                        size,
                        lambda: self._take(digest, size),
                        lambda token: self._into.metadata.link_blob(name, key, size, token),
                    )
                elif key not in self._blobs:
                    check_digest(digest, await source.digest(path, digest.algorithm))
        except NotFound as error:  # gone since the tree was listed, or never there
            self._blobs[key] = self._problem(Issue.MISSING, key, f"no bytes at {error}")
            return False
        except DigestInvalid as error:
            self._blobs[key] = self._problem(Issue.CORRUPT, key, f"{error.detail}")
            return False
        self._blobs[key] = True
        return True

    async def _take(self, digest: Digest, size: int) -> None:
        """The blob's bytes checked, then at the blob's key. DigestInvalid if they do not match,
        NotFound if they are gone."""
        source, path = self._tree.source, self._tree.blob_path(digest)
        storage = self._into.storage
        placement = None
        if source.copies_as_read(storage):
            # Read once at the source to hash it, then copied once, straight to the blob's key:
            # both take the version listed, so what is checked is what is copied (not copied to
            # a temporary object, read, and copied again).
            check_digest(digest, await source.digest(path, digest.algorithm))
            placement = await source.place(path, storage, keys.blob(digest))
        if placement is None:
            placement = await self._through_temporary(path, digest)
        report = self._report
        report.taken += 1
        report.taken_bytes += size
        report.copied += placement is not Placement.LINKED
        report.placements[placement] = report.placements.get(placement, 0) + 1

    async def _through_temporary(self, path: str, digest: Digest) -> Placement:
        """The blob's bytes into a temporary object, checked, then moved to the blob's key."""
        temp = keys.upload_part(uuid.uuid4().hex, uuid.uuid4().hex)
        storage = self._into.storage
        try:
            placement = await self._tree.source.place(path, storage, temp)
            if placement is None:
                placement = Placement.STREAMED
                await self._stream(path, temp, digest)
            else:
                # What is checked is what becomes the blob: the copy, read once to hash it.
                check_digest(digest, await hash_object(storage, temp, digest.algorithm))
            await storage.move(temp, keys.blob(digest))
        finally:
            await storage.delete(temp)  # gone already once moved
        return placement

    async def _stream(self, path: str, temp: str, digest: Digest) -> None:
        """Between a folder and a bucket, or buckets of two servers: read and written through,
        hashed on the way."""
        hasher = hashlib.new(digest.algorithm)
        writer = await self._into.storage.writer(temp)
        try:
            await receive(writer, self._tree.source.open(path), hasher)
            check_digest(digest, hasher.hexdigest())
        except BaseException:
            await writer.cancel()
            raise
        await writer.commit()

    async def _import_manifests(
        self, name: str, revisions: Iterable[Digest], readable: set[str], manifests: _Manifests
    ) -> dict[str, tuple[bytes, str | None]]:
        """Import the repository's manifests, children before their indexes; digest to
        (bytes, media type) of those imported."""
        pending: dict[str, tuple[bytes, str | None, list[str]]] = {}
        for revision in revisions:
            loaded = self._load_manifest(name, revision, manifests[str(revision)])
            if loaded is not None:
                pending[str(revision)] = loaded
        imported: dict[str, tuple[bytes, str | None]] = {}
        # Each pass imports the manifests whose children are in; what is left lacks some.
        while ready := [d for d, (_, _, kids) in pending.items() if set(kids) <= imported.keys()]:
            for digest in ready:
                body, content_type, _ = pending.pop(digest)
                if await self._put_manifest(name, digest, body, content_type, readable):
                    imported[digest] = (body, content_type)
        for digest, (_, _, children) in pending.items():
            lacking = sorted(set(children) - imported.keys())
            detail = f"{digest}: child manifests not imported: {', '.join(lacking[:5])}"
            self._problem(Issue.INCOMPLETE, name, detail)
        self._report.manifests += len(imported)
        return imported

    def _load_manifest(
        self, name: str, digest: Digest, body: bytes | tuple[Issue, str]
    ) -> tuple[bytes, str | None, list[str]] | None:
        """A manifest's bytes, checked, its media type if it declares none, and its children."""
        if isinstance(body, tuple):
            self._problem(body[0], name, body[1])
            return None
        if Digest.of(body, digest.algorithm) != digest:
            self._problem(Issue.CORRUPT, name, f"manifest {digest}: bytes do not match")
            return None
        content_type = _guess_type(body)
        try:
            parsed = parse(body, content_type)
        except ManifestInvalid as error:
            self._problem(Issue.UNSUPPORTED, name, f"manifest {digest}: {error.detail}")
            return None
        children = [r.digest for r in parsed.references if r.kind == "manifest"]
        return body, content_type, children

    async def _put_manifest(
        self, name: str, digest: str, body: bytes, content_type: str | None, readable: set[str]
    ) -> bool:
        if self._dry_run:
            parsed = parse(body, content_type)
            lacking = [r.digest for r in parsed.references if r.kind == "blob"]
            lacking = [d for d in lacking if d not in readable]
            if lacking:
                self._problem(Issue.INCOMPLETE, name, f"{digest}: blobs {', '.join(lacking[:5])}")
                return False
            return True
        try:
            await self._into.manifests.put(name, digest, content_type, body)
        except ManifestBlobUnknown as error:
            self._problem(Issue.INCOMPLETE, name, f"{digest}: not readable: {error.detail}")
            return False
        return True

    def _problem(self, issue: Issue, where: str, detail: str) -> bool:
        """Report it; False, for what it makes unimportable."""
        self._report.problems.append(Problem(issue, where, detail))
        return False
