"""What the registry holds, summarized for people (the web UI): pages of repositories and tags
with sizes, platforms and times; an image's layers, config and referrers; storage by namespace.

Pages are keyset pages: the next one starts after the last row of this one, so a page costs the
same at any depth and no count of everything is made. Where a caller may not see every
repository, its `visible` predicate is applied here, as Discovery applies it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from portside.metadata.base import (
    BrowseStore,
    CollectionRun,
    Manifest,
    NamespaceUsage,
    RepositoryOrder,
    RepositoryRow,
    TagRow,
)
from portside.registry import keys
from portside.registry.contents import (
    ImageConfig,
    ManifestContent,
    read_config,
    read_manifest,
)
from portside.registry.discovery import Discovery, Visible
from portside.registry.errors import ManifestUnknown, NameUnknown
from portside.registry.manifest_store import CONFIG_READ_MAX, ManifestStore
from portside.registry.names import Digest
from portside.storage.base import BlobStore, NotFound

# Rows read at a time while filling a page with repositories the caller may see.
VISIBLE_BATCH: Final = 500
# Image configs kept, by digest (immutable): a tag page shows each image's platform.
CONFIGS_KEPT: Final = 4096
# The types of config blobs that are image configs (others are an artifact's own).
IMAGE_CONFIG_TYPES: Final = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)


@dataclass(frozen=True, slots=True)
class RepositoryPage:
    rows: list[RepositoryRow]
    next_after: RepositoryRow | None  # the last row, when more follow


@dataclass(frozen=True, slots=True)
class TagDetails:
    row: TagRow
    pull_size: int | None  # the bytes a pull moves
    platforms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TagPage:
    repository: RepositoryRow
    tags: list[TagDetails]
    next_after: str | None  # the last tag, when more follow


@dataclass(frozen=True, slots=True)
class ImageDetails:
    manifest: Manifest
    content: bytes
    parsed: ManifestContent
    config: ImageConfig | None
    tags: list[str]
    referrers: list[Manifest]
    pull_size: int | None


@dataclass(frozen=True, slots=True)
class Usage:
    blobs: int
    stored: int  # bytes of every blob stored, each once
    namespaces: list[NamespaceUsage]
    largest: list[RepositoryRow]
    last_collection: CollectionRun | None


class _Configs:
    """Image configs by digest, the most recently shown kept."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[str, ImageConfig | None] = OrderedDict()
        self._capacity = capacity

    def get(self, digest: str) -> tuple[bool, ImageConfig | None]:
        if digest not in self._items:
            return False, None
        self._items.move_to_end(digest)
        return True, self._items[digest]

    def put(self, digest: str, config: ImageConfig | None) -> None:
        self._items[digest] = config
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)


class Inventory:
    def __init__(
        self,
        storage: BlobStore,
        metadata: BrowseStore,
        manifests: ManifestStore,
        discovery: Discovery,
    ) -> None:
        self._storage = storage
        self._metadata = metadata
        self._manifests = manifests
        self._discovery = discovery
        self._configs = _Configs(CONFIGS_KEPT)

    async def repositories(
        self,
        order: RepositoryOrder,
        text: str,
        after: RepositoryRow | None,
        limit: int,
        visible: Visible | None = None,
    ) -> RepositoryPage:
        """A page of the repositories holding a manifest whose name or description contains
        text; with visible, only those it passes, as many as limit asks for."""
        batch_size = limit + 1 if visible is None else max(limit + 1, VISIBLE_BATCH)
        shown: list[RepositoryRow] = []
        while len(shown) <= limit:
            batch = await self._metadata.repository_rows(order, text, after, batch_size)
            shown += [row for row in batch if visible is None or visible(row.name)]
            if len(batch) < batch_size:
                break
            after = batch[-1]
        if len(shown) > limit:
            return RepositoryPage(shown[:limit], shown[limit - 1])
        return RepositoryPage(shown, None)

    async def repository(self, name: str) -> RepositoryRow:
        found = await self._metadata.repository_row(name)
        if found is None:
            raise NameUnknown({"name": name})
        return found

    async def holds(self, name: str) -> bool:
        """Whether the repository holds a manifest."""
        return await self._metadata.repository_row(name) is not None

    async def tags(self, name: str, after: str | None, limit: int) -> TagPage:
        """A page of the repository's tags, each with what a pull of it moves and its
        platforms; NameUnknown for a repository without a manifest."""
        repository = await self.repository(name)
        rows = await self._metadata.tag_rows(name, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        sizes = await self._metadata.pull_sizes(name, {row.digest for row in rows})
        tags = [TagDetails(row, sizes.get(row.digest), await self._platforms(row)) for row in rows]
        return TagPage(repository, tags, rows[-1].name if more else None)

    async def _platforms(self, row: TagRow) -> tuple[str, ...]:
        try:
            content = await self._manifests.content(row.digest)
        except NotFound:  # collected since the page's rows were read
            return ()
        parsed = read_manifest(content, row.media_type)
        if parsed.is_index:
            return tuple(child.platform for child in parsed.children if child.platform)
        config = await self._config(parsed)
        return (config.platform,) if config is not None and config.platform else ()

    async def _config(self, parsed: ManifestContent) -> ImageConfig | None:
        """The image config an image manifest names, read up to CONFIG_READ_MAX bytes; None for
        an artifact's config, a missing or unreadable one."""
        descriptor = parsed.config
        if descriptor is None or descriptor.media_type not in IMAGE_CONFIG_TYPES:
            return None
        known, config = self._configs.get(descriptor.digest)
        if known:
            return config
        try:
            key = keys.blob(Digest.parse(descriptor.digest))
            parts = [chunk async for chunk in self._storage.read(key, 0, CONFIG_READ_MAX + 1)]
        except NotFound:
            return None
        content = b"".join(parts)
        config = None if len(content) > CONFIG_READ_MAX else read_config(content)
        self._configs.put(descriptor.digest, config)
        return config

    async def image(self, name: str, digest: Digest) -> ImageDetails:
        """A manifest by digest with its parsed content, image config, tags and referrers;
        ManifestUnknown if the repository lacks it."""
        try:
            manifest, content = await self._manifests.get(name, str(digest))
        except NotFound:  # its bytes are gone: collected since its record was read
            raise ManifestUnknown({"reference": str(digest)}) from None
        parsed = read_manifest(content, manifest.media_type)
        sizes = await self._metadata.pull_sizes(name, [manifest.digest])
        return ImageDetails(
            manifest=manifest,
            content=content,
            parsed=parsed,
            config=await self._config(parsed),
            tags=await self._metadata.tags_on(name, manifest.digest),
            referrers=await self._discovery.referrers(name, digest, None),
            pull_size=sizes.get(manifest.digest),
        )

    async def usage(self, largest: int) -> Usage:
        """Storage of the whole registry: by namespace, the largest repositories, the last
        garbage collection."""
        blobs, stored = await self._metadata.stored_blobs()
        return Usage(
            blobs=blobs,
            stored=stored,
            namespaces=await self._metadata.namespace_usage(),
            largest=await self._metadata.repository_rows(RepositoryOrder.SIZE, "", None, largest),
            last_collection=await self._metadata.last_collection(),
        )
