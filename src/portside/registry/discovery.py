"""Listing: tags of a repository, repositories of the registry, referrers of a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from portside.metadata.base import Manifest, MetadataStore
from portside.registry.errors import NameUnknown
from portside.registry.names import Digest

# The most entries one page returns, whatever n asks for; the Link header leads to the rest.
PAGE_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    # The last item when more follow: the `last` of the next page's Link.
    next_last: str | None


def _page(items: list[str], n: int) -> Page:
    if len(items) > n:
        return Page(items[:n], items[n - 1])
    return Page(items, None)


class Discovery:
    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata

    async def tags(self, name: str, n: int | None, last: str | None) -> Page:
        if not await self._metadata.repository_exists(name):
            raise NameUnknown({"name": name})
        limit = PAGE_MAX if n is None else min(n, PAGE_MAX)
        if limit == 0:
            return Page([], None)
        return _page(await self._metadata.list_tags(name, limit + 1, last), limit)

    async def repositories(self, n: int | None, last: str | None) -> Page:
        limit = PAGE_MAX if n is None else min(n, PAGE_MAX)
        if limit == 0:
            return Page([], None)
        return _page(await self._metadata.list_repositories(limit + 1, last), limit)

    async def referrers(
        self, name: str, subject: Digest, artifact_type: str | None
    ) -> list[Manifest]:
        if not await self._metadata.repository_exists(name):
            raise NameUnknown({"name": name})
        return await self._metadata.list_referrers(name, str(subject), artifact_type)

    async def search(self, query: str) -> list[str]:
        """Repositories whose name contains query, in lexical order."""
        names = await self._metadata.list_repositories(None, None)
        return [name for name in names if query in name]
