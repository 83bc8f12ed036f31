"""(repository id, digest) pairs as a table that one statement joins, so that a page of
repositories' candidates is looked up, locked and re-checked by a statement each, every pair
through an index. Not a row-value IN list: SQLite (3.40) scans the whole table for
`(repository_id, digest) IN (VALUES ...)`. The pairs travel as one parameter (a JSON array on
SQLite, two arrays on PostgreSQL), so the statement is compiled once, whatever their number.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

from sqlalchemy import Connection, Integer, String, bindparam, column, func, select, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.expression import FromClause

from portside.metadata.statements import CHUNK, chunks
from portside.metadata.tables import repositories

Pair = tuple[int, str]


def pairs(conn: Connection, rows: Sequence[Pair]) -> FromClause:
    """The rows as a table of columns repository_id and digest."""
    if conn.dialect.name == "postgresql":
        ids = bindparam("ids", [r for r, _ in rows], type_=ARRAY(Integer), unique=True)
        digests = bindparam("digests", [d for _, d in rows], type_=ARRAY(String), unique=True)
        unnested = func.unnest(ids, digests).table_valued(
            column("repository_id", Integer), column("digest", String)
        )
        return unnested.render_derived(name="pairs")
    encoded = json.dumps([[repository_id, digest] for repository_id, digest in rows])
    each = func.json_each(bindparam("pairs", encoded, unique=True)).table_valued("value")
    return select(
        type_coerce(func.json_extract(each.c.value, "$[0]"), Integer).label("repository_id"),
        type_coerce(func.json_extract(each.c.value, "$[1]"), String).label("digest"),
    ).subquery("pairs")


def pair_chunks(rows: Iterable[Pair]) -> Iterator[list[Pair]]:
    """rows, sorted (so that rows are locked in one order), in lists of at most CHUNK."""
    ordered = sorted(rows)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]


def repository_ids(conn: Connection, names: Iterable[str]) -> dict[int, str]:
    """The ids of those of the repositories that exist, to their names."""
    found: dict[int, str] = {}
    for chunk in chunks(names):
        rows = conn.execute(
            select(repositories.c.id, repositories.c.name).where(repositories.c.name.in_(chunk))
        )
        found.update((row.id, row.name) for row in rows)
    return found


def pairs_of(
    conn: Connection, digests: Mapping[str, Collection[str]]
) -> tuple[dict[int, str], list[Pair]]:
    """The ids of the repositories named (those that exist) to their names, and the pairs of
    their ids and digests."""
    names = repository_ids(conn, digests)
    ids = {name: repository_id for repository_id, name in names.items()}
    return names, [
        (ids[name], digest) for name, found in digests.items() if name in ids for digest in found
    ]


def by_name(names: Mapping[int, str], rows: Iterable[Pair]) -> dict[str, list[str]]:
    """The pairs' digests by repository name, in digest order (only repositories with some)."""
    found: dict[str, list[str]] = {}
    for repository_id, digest in sorted(rows):
        found.setdefault(names[repository_id], []).append(digest)
    return found
