"""`portside sync`: copying repositories from another registry that speaks the v2 API, fetching
only what is missing. The upstream client is the pull-through cache's (auth challenges, tokens,
redirects to object storage), and what arrives goes through the push path: blobs through
ingest (hashed, reserved, linked), manifests through ManifestStore.put (digest and references
checked). A tag whose upstream digest is already the local one costs one HEAD request, and one
question for its referrers.

Referrers (signatures, SBOMs, attestations: manifests whose `subject` is a copied manifest, an
index's children included, and theirs in turn) come along, from the upstream's referrers API, or
where it answers 404, from the index its referrers tag schema keeps (`sha256-<hex>`). They are
asked for at every run, since they are attached after the image; only the missing are fetched.

A dry run reads the upstream as a run would and counts what it would fetch, writing nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from portside.metadata.base import CacheStore, Claim
from portside.registry.errors import ManifestInvalid, RegistryError
from portside.registry.gc import Progress
from portside.registry.ingest import ingest, store
from portside.registry.manifest_store import ManifestStore
from portside.registry.manifests import INDEX_TYPES, parse
from portside.registry.names import Digest, is_tag, parse_name
from portside.registry.tag_filter import TagFilter, match_names
from portside.storage.base import BlobStore
from portside.upstream import FetchedManifest, Upstream
from portside.upstream.errors import UpstreamError, UpstreamInvalid, UpstreamNotFound
from portside.upstream.references import is_digest

# Indexes of indexes, and referrers of referrers, followed at most.
MAX_DEPTH: Final = 4


@dataclass(slots=True)
class Report:
    """What a run copied; of a dry run, what it would copy."""

    repositories: int = 0
    tags: int = 0  # tags selected
    unchanged: int = 0  # of those, already at the upstream's digest
    manifests: int = 0  # manifests fetched
    referrers: int = 0  # of those, referrers of the tags' manifests
    blobs: int = 0  # blobs fetched (not those stored here already, which are linked)
    bytes: int = 0
    failures: list[str] = field(default_factory=list)
    tagged: list[tuple[str, str, str]] = field(default_factory=list)  # (repository, tag, digest)
    copied: list[tuple[str, str]] = field(default_factory=list)  # (repository, manifest digest)


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
        *,
        dry_run: bool = False,
    ) -> None:
        """prefix: put before each repository's name here (`mirror/` makes `a/b` `mirror/a/b`).
        dry_run: fetch manifests, to count what they reference, but store nothing."""
        self._upstream = upstream
        self._storage = storage
        self._metadata = metadata
        self._manifests = ManifestStore(storage, metadata)
        self._prefix = prefix
        self._progress = progress or _Silent()
        self._dry_run = dry_run
        self._walked: set[tuple[str, str]] = set()  # (repository here, digest) asked for referrers
        # The spec forbids a registry with the referrers API to answer it 404: after one 404,
        # the run asks the referrers tag schema only.
        self._without_api = False
        # A dry run's stand-in for what it would have stored: manifests by repository here and
        # digest, and the blobs it counted as fetched.
        self._planned: dict[tuple[str, str], FetchedManifest] = {}
        self._planned_blobs: set[str] = set()

    async def repositories(self, patterns: Sequence[str]) -> list[str]:
        """The upstream repositories the patterns name: as they are, without wildcards; else
        those of its catalog that match."""
        if all(not set("*?[") & set(p) for p in patterns):
            return sorted(set(patterns))
        return match_names(await self._upstream.catalog(), patterns)

    async def sync(self, repositories: Sequence[str], tags: TagFilter) -> Report:
        report = Report()
        self._walked.clear()  # referrers attached since the last run are looked for again
        self._without_api = False  # the upstream may have been upgraded since
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
                    report.tagged.append((target, tag, info.digest))
                    if not self._dry_run:
                        manifest, content = await self._manifests.get(target, info.digest)
                        await self._manifests.put(target, tag, manifest.media_type, content)
                await self._attached(name, target, info.digest, report)
            except (UpstreamError, RegistryError) as error:
                report.failures.append(f"{name}:{tag}: {error}")
            self._progress.advance()

    async def _manifest(
        self, name: str, target: str, digest: str, report: Report, depth: int = 0
    ) -> bool:
        """Copy the manifest by digest, and what it references, unless target has it; whether
        it was copied."""
        if (target, digest) in self._planned:
            return False
        if await self._metadata.get_manifest(target, digest) is not None:
            return False
        if depth > MAX_DEPTH:
            raise ManifestInvalid(f"{digest}: indexes nested deeper than {MAX_DEPTH}")
        fetched = await self._upstream.get_manifest(name, digest)
        report.manifests += 1
        report.copied.append((target, digest))
        parsed = parse(fetched.content, fetched.media_type)
        if self._dry_run:
            self._planned[target, digest] = fetched
        sizes = _blob_sizes(fetched.content)
        for reference in parsed.references:
            if reference.kind == "manifest":
                await self._manifest(name, target, reference.digest, report, depth + 1)
            else:
                blob = Digest.parse(reference.digest)
                await self._blob(name, target, blob, sizes.get(reference.digest, 0), report)
        if not self._dry_run:
            await self._manifests.put(target, digest, fetched.media_type, fetched.content)
        return True

    async def _attached(
        self, name: str, target: str, digest: str, report: Report, depth: int = 0
    ) -> None:
        """Copy the missing referrers of the manifest, of its children if it is an index, and
        theirs in turn."""
        if (target, digest) in self._walked or depth > MAX_DEPTH:
            return
        self._walked.add((target, digest))
        for referrer in await self._referrers(name, digest):
            if await self._manifest(name, target, referrer, report):
                report.referrers += 1
            await self._attached(name, target, referrer, report, depth + 1)
        for child in await self._children(target, digest):
            await self._attached(name, target, child, report, depth + 1)

    async def _referrers(self, name: str, digest: str) -> list[str]:
        """The digests of the manifests whose subject is digest: from the referrers API, else
        from the referrers tag schema's index; none if neither has any."""
        index = None if self._without_api else await self._upstream.referrers(name, digest)
        if index is None:
            self._without_api = True
            try:
                index = (await self._upstream.get_manifest(name, referrers_tag(digest))).content
            except UpstreamNotFound:
                return []
        try:
            entries = json.loads(index)["manifests"]
            found = [entry["digest"] for entry in entries]
        except (ValueError, KeyError, TypeError) as error:
            raise UpstreamInvalid(f"the referrers of {digest} are not an image index") from error
        if not all(isinstance(d, str) and is_digest(d) for d in found):
            raise UpstreamInvalid(f"the referrers index of {digest} lists a bad digest")
        return found

    async def _children(self, target: str, digest: str) -> list[str]:
        """The manifests an index here (or planned here) lists; none for an image."""
        planned = self._planned.get((target, digest))
        if planned is not None:
            parsed = parse(planned.content, planned.media_type)
        else:
            local = await self._metadata.get_manifest(target, digest)
            if local is None or local.media_type not in INDEX_TYPES:
                return []
            parsed = parse((await self._manifests.get(target, digest))[1], local.media_type)
        return [r.digest for r in parsed.references if r.kind == "manifest"]

    async def _blob(
        self, name: str, target: str, digest: Digest, declared: int, report: Report
    ) -> None:
        """Link the blob to target, fetching it unless it is stored here; declared: the size
        the manifest gives it."""
        if await self._metadata.linked_blob_size(target, str(digest)) is not None:
            return
        if self._dry_run:  # linked, if stored here already or fetched for another manifest
            if str(digest) not in self._planned_blobs:
                self._planned_blobs.add(str(digest))
                if await self._metadata.blob_size(str(digest)) is None:
                    report.blobs += 1
                    report.bytes += declared
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

            async def link(size: int, token: Claim) -> None:
                await self._metadata.link_blob(target, str(digest), size, token)

            size = await ingest(self._storage, self._metadata, digest, aiter(stream), link)
        report.blobs += 1
        report.bytes += size


def referrers_tag(digest: str) -> str:
    """The tag under which the referrers tag schema keeps an index of digest's referrers:
    `<alg>-<hex>`, each cut as the distribution spec says (to 32 and 64 characters)."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm[:32]}-{encoded[:64]}"


def _blob_sizes(content: bytes) -> dict[str, int]:
    """The sizes an image manifest gives its config and layers, by digest (for a dry run's count:
    parse() has checked the descriptors)."""
    document: dict[str, Any] = json.loads(content)
    descriptors = [document.get("config"), *document.get("layers", [])]
    return {d["digest"]: d["size"] for d in descriptors if isinstance(d, dict)}
