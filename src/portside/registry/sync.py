"""`portside sync`: copying repositories from another registry that speaks the v2 API, fetching
only what is missing. The upstream client is the pull-through cache's (auth challenges, tokens,
redirects to object storage), and what arrives goes through the push path: blobs through
ingest (hashed, reserved, linked), manifests through ManifestStore.put (digest and references
checked). A tag whose upstream digest is already the local one costs one HEAD request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from portside.metadata.base import CacheStore
from portside.registry.errors import ManifestInvalid, RegistryError
from portside.registry.gc import Progress
from portside.registry.ingest import ingest, store
from portside.registry.manifest_store import ManifestStore
from portside.registry.manifests import parse
from portside.registry.names import Digest, is_tag, parse_name
from portside.registry.tag_filter import TagFilter, match_names
from portside.storage.base import BlobStore
from portside.upstream import Upstream
from portside.upstream.errors import UpstreamError

# Indexes of indexes followed at most.
MAX_DEPTH: Final = 4


@dataclass(slots=True)
class Report:
    repositories: int = 0
    tags: int = 0  # tags selected
    unchanged: int = 0  # of those, already at the upstream's digest
    manifests: int = 0  # manifests fetched
    blobs: int = 0  # blobs fetched
    bytes: int = 0
    failures: list[str] = field(default_factory=list)


class _Collected(Exception):
    """A blob found stored was collected before it could be linked: fetch it after all."""


async def _collected() -> None:
    raise _Collected


class _Silent:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


class Sync:
    def __init__(
        self,
        upstream: Upstream,
        storage: BlobStore,
        metadata: CacheStore,
        prefix: str = "",
        progress: Progress | None = None,
    ) -> None:
        """prefix: put before each repository's name here (`mirror/` makes `a/b` `mirror/a/b`)."""
        self._upstream = upstream
        self._storage = storage
        self._metadata = metadata
        self._manifests = ManifestStore(storage, metadata)
        self._prefix = prefix
        self._progress = progress or _Silent()

    async def repositories(self, patterns: Sequence[str]) -> list[str]:
        """The upstream repositories the patterns name: as they are, without wildcards; else
        those of its catalog that match."""
        if all(not set("*?[") & set(p) for p in patterns):
            return sorted(set(patterns))
        return match_names(await self._upstream.catalog(), patterns)

    async def sync(self, repositories: Sequence[str], tags: TagFilter) -> Report:
        report = Report()
        for name in repositories:
            try:
                await self._repository(name, tags, report)
            except (UpstreamError, RegistryError) as error:
                report.failures.append(f"{name}: {error}")
        return report

    async def _repository(self, name: str, tags: TagFilter, report: Report) -> None:
        target = parse_name(self._prefix + name)
        chosen = [t for t in await self._upstream.tags(name) if is_tag(t) and tags(t)]
        report.repositories += 1
        self._progress.start(f"syncing {name}", len(chosen))
        for tag in chosen:
            report.tags += 1
            try:
                info = await self._upstream.head_manifest(name, tag)
                local = await self._metadata.get_manifest(target, tag)
                if local is not None and local.digest == info.digest:
                    report.unchanged += 1
                else:
                    await self._manifest(name, target, info.digest, report)
                    manifest, content = await self._manifests.get(target, info.digest)
                    await self._manifests.put(target, tag, manifest.media_type, content)
            except (UpstreamError, RegistryError) as error:
                report.failures.append(f"{name}:{tag}: {error}")
            self._progress.advance()

    async def _manifest(
        self, name: str, target: str, digest: str, report: Report, depth: int = 0
    ) -> None:
        """Copy the manifest by digest, and what it references, unless target has it."""
        if await self._metadata.get_manifest(target, digest) is not None:
            return
        if depth > MAX_DEPTH:
            raise ManifestInvalid(f"{digest}: indexes nested deeper than {MAX_DEPTH}")
        fetched = await self._upstream.get_manifest(name, digest)
        report.manifests += 1
        parsed = parse(fetched.content, fetched.media_type)
        for reference in parsed.references:
            if reference.kind == "manifest":
                await self._manifest(name, target, reference.digest, report, depth + 1)
            else:
                await self._blob(name, target, Digest.parse(reference.digest), report)
        await self._manifests.put(target, digest, fetched.media_type, fetched.content)

    async def _blob(self, name: str, target: str, digest: Digest, report: Report) -> None:
        if await self._metadata.linked_blob_size(target, str(digest)) is not None:
            return
        size = await self._metadata.blob_size(str(digest))
        if size is not None:  # stored for another repository: link it, fetch nothing
            try:
                await store(
                    self._metadata,
                    digest,
                    size,
                    _collected,
                    lambda token: self._metadata.link_blob(target, str(digest), size, token),
                )
                return
            except _Collected:
                pass
        await self._fetch(name, target, digest, report)

    async def _fetch(self, name: str, target: str, digest: Digest, report: Report) -> None:
        async with self._upstream.open_blob(name, str(digest)) as stream:

            async def link(size: int, token: str) -> None:
                await self._metadata.link_blob(target, str(digest), size, token)

            size = await ingest(self._storage, self._metadata, digest, aiter(stream), link)
        report.blobs += 1
        report.bytes += size
