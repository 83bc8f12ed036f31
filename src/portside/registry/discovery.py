"""Listing: tags of a repository, repositories of the registry, referrers of a manifest, search.
Where a caller may not see every repository, its `visible` predicate is applied here, and only
here, with paging counted over what it shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from portside.metadata.base import Manifest, RepositorySummary, RequestStore
from portside.registry.errors import NameUnknown
from portside.registry.manifests import annotations_as_text
from portside.registry.names import Digest

# The most entries one page returns, whatever n asks for; the Link header leads to the rest.
PAGE_MAX: Final = 10_000
# Names read at a time while filling a catalog page with repositories the caller may see.
CATALOG_BATCH: Final = 1_000
# The most matches a search counts and lists: a total past it costs a read of every match.
SEARCH_CAP: Final = 1_000
# Matches read at a time while counting those the caller may see.
SEARCH_BATCH: Final = SEARCH_CAP + 1

# Whether the caller may see (pull) a repository, by name.
Visible = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    # The last item when more follow: the `last` of the next page's Link.
    next_last: str | None


@dataclass(frozen=True, slots=True)
class SearchResults:
    # How many repositories match (at most SEARCH_CAP), and those of the page asked for.
    total: int
    items: list[RepositorySummary]


def _page(items: list[str], n: int) -> Page:
    if len(items) > n:
        return Page(items[:n], items[n - 1])
    return Page(items, None)


def page_of(items: list[str], n: int | None, last: str | None) -> Page:
    """A page of a list already at hand, in lexical (code point) order, as tags() pages."""
    limit = PAGE_MAX if n is None else min(n, PAGE_MAX)
    ordered = sorted(item for item in set(items) if last is None or item > last)
    return _page(ordered, limit) if limit else Page([], None)


class Discovery:
    def __init__(self, metadata: RequestStore) -> None:
        self._metadata = metadata

    async def tags(self, name: str, n: int | None, last: str | None) -> Page:
        if not await self._metadata.repository_exists(name):
            raise NameUnknown({"name": name})
        limit = PAGE_MAX if n is None else min(n, PAGE_MAX)
        if limit == 0:
            return Page([], None)
        return _page(await self._metadata.list_tags(name, limit + 1, last), limit)

    async def repositories(
        self, n: int | None, last: str | None, visible: Visible | None = None
    ) -> Page:
        """Repositories holding a manifest, after last; with visible, only those it passes, and
        as many of them as n asks for, however many hidden ones lie between."""
        limit = PAGE_MAX if n is None else min(n, PAGE_MAX)
        if limit == 0:
            return Page([], None)
        if visible is None:
            return _page(await self._metadata.list_repositories(limit + 1, last), limit)
        shown: list[str] = []
        batch_size = max(limit + 1, CATALOG_BATCH)
        while len(shown) <= limit:
            batch = await self._metadata.list_repositories(batch_size, last)
            shown += [name for name in batch if visible(name)]
            if len(batch) < batch_size:
                break
            last = batch[-1]
        return _page(shown[: limit + 1], limit)

    async def referrers(
        self, name: str, subject: Digest, artifact_type: str | None
    ) -> list[Manifest]:
        """The referrers of subject in name: none for a repository that does not exist (yet),
        which the conformance suite asks of a registry, as of a subject never pushed."""
        found = await self._metadata.list_referrers(name, str(subject), artifact_type)
        # Stored before lone surrogates were refused, annotations would break the whole list.
        return [
            replace(manifest, annotations=annotations_as_text(manifest.annotations))
            for manifest in found
        ]

    async def search(
        self, query: str, page: int, page_size: int, visible: Visible | None = None
    ) -> SearchResults:
        """Repositories whose name or description contains query, ignoring case, in lexical
        order: page (from 1) of those visible passes, page_size to a page.

        Only the first SEARCH_CAP matches (visible ones) are counted and listed, so that a
        page costs the same whatever the registry's size; a query matching more reports
        SEARCH_CAP (clients show the results, not the count). visible runs here (repository
        permissions are patterns, not SQL) over matches read in name order a batch at a time,
        until SEARCH_CAP + 1 of them are visible or no match is left."""
        offset = (page - 1) * page_size
        end = min(offset + page_size, SEARCH_CAP)
        if visible is None:
            total = await self._metadata.count_search_matches(query, SEARCH_CAP)
            found = (
                await self._metadata.search_repositories(query, None, end) if end > offset else []
            )
            return SearchResults(min(total, SEARCH_CAP), found[offset:])
        shown: list[RepositorySummary] = []
        last: str | None = None
        while len(shown) <= SEARCH_CAP:
            batch = await self._metadata.search_repositories(query, last, SEARCH_BATCH)
            shown += [summary for summary in batch if visible(summary.name)]
            if len(batch) < SEARCH_BATCH:
                break
            last = batch[-1].name
        return SearchResults(min(len(shown), SEARCH_CAP), shown[offset:end])
