"""Which repositories a search's text matches, found without reading every repository.

A repository matches when it holds a manifest and its name or description (the newest, kept on
its row by 0010's triggers) contains the text, ignoring case, the text's % and _ taken
literally. Text of three characters or more is looked up in 0012's trigram index (SQLite's FTS5
table; PostgreSQL's GIN indexes serve the LIKE itself): when it finds at most SORTED_MAX
repositories, they are read whole and sorted, a cost bounded whatever the registry's size.
Shorter text, which trigrams cannot look up, and text matching more than that walk repositories
in the page's order and stop once the page is full: more matches make that walk shorter.
"""

from __future__ import annotations

from typing import Any, Final, TypeVar

from sqlalchemy import (
    CTE,
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
)

from portside.metadata.engine import Database
from portside.metadata.tables import manifests, repositories

# Trigrams: shorter text has none to look up.
INDEXED_MIN: Final = 3
# The most repositories the index's matches may hold to be read whole and sorted.
SORTED_MAX: Final = 1_000

SEARCH_INDEX = table("repository_search")

T = TypeVar("T", bound=tuple[Any, ...])


def matching(text: str) -> ColumnElement[bool]:
    """Repositories holding a manifest whose name or description contains text."""
    has_manifest = exists().where(manifests.c.repository_id == repositories.c.id)
    if not text:
        return has_manifest
    # lower() folds ASCII only on SQLite, all of Unicode on PostgreSQL; names are ASCII.
    return and_(
        has_manifest,
        or_(
            repositories.c.name.icontains(text, autoescape=True),
            repositories.c.description.icontains(text, autoescape=True),
        ),
    )


def fts_phrase(text: str) -> str:
    """text as one FTS5 phrase: its characters literally, whatever operators they spell."""
    return '"' + text.replace('"', '""') + '"'


class SqlTextSearch(Database):
    def _through_index(self, found: Select[T], text: str) -> Select[T]:
        """found (over repositories, filtered by matching(text)) reading only the rows the
        trigram index finds. PostgreSQL's planner takes the GIN indexes for matching's LIKE
        itself; SQLite's FTS5 table is joined first, each match then read by its id."""
        if self.engine.dialect.name == "postgresql":
            return found
        rowid = literal_column("repository_search.rowid", Integer)
        return found.join_from(SEARCH_INDEX, repositories, repositories.c.id == rowid).where(
            literal_column("repository_search").op("MATCH")(fts_phrase(text))
        )

    def _count_matches(self, conn: Connection, text: str, cap: int) -> int:
        """How many repositories match text, counted no further than cap + 1."""
        found = select(repositories.c.id).where(matching(text))
        if len(text) >= INDEXED_MIN:
            found = self._through_index(found, text)
        return conn.scalar(select(func.count()).select_from(found.limit(cap + 1).subquery())) or 0

    def _few_matches(self, conn: Connection, text: str, *columns: ColumnElement[Any]) -> CTE | None:
        """The columns of every repository matching text, from the index, when it finds at most
        SORTED_MAX of them; None when the text is too short for the index, or matches more.

        The matches are a materialized CTE: a query over them (an order and a page) cannot be
        planned as a walk of repositories in order, which would read all of them."""
        if len(text) < INDEXED_MIN or self._count_matches(conn, text, SORTED_MAX) > SORTED_MAX:
            return None
        found = self._through_index(select(*columns).where(matching(text)), text)
        return found.cte("matching").prefix_with("MATERIALIZED")
