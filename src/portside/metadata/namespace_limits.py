"""A quota checked in the transaction of the write it allows: the namespace's usage row (0013)
locked first, read before and after the write, the write refused if it adds to a usage it leaves
over a limit.

The lock (FOR UPDATE on PostgreSQL) is the one every trigger keeping the row takes, so no other
write in the namespace, through any worker or instance, changes its usage until this transaction
ends: what is read after the write is what the commit leaves. SQLite runs one writer at a time,
and a refused write in a group commit is undone in its own savepoint (group_commit.py).
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, select

from portside.metadata.base import Footprint, NamespaceLimits, OverQuota
from portside.metadata.prepared import Prepared
from portside.metadata.statements import insert_missing
from portside.metadata.tables import namespaces

_USAGE = Prepared(
    select(namespaces.c.size, namespaces.c.repositories, namespaces.c.tags)
    .where(namespaces.c.name == bindparam("namespace"))
    .with_for_update()
)


def _usage(conn: Connection, namespace: str) -> Footprint | None:
    row = _USAGE.run(conn, namespace=namespace).first()
    return None if row is None else Footprint(*(int(value) for value in row))


def lock_usage(conn: Connection, namespace: str) -> Footprint:
    """The namespace's usage, its row locked until the transaction ends (made if missing, so
    that the first pushes into a namespace wait for each other too)."""
    found = _usage(conn, namespace)
    if found is None:
        insert_missing(conn, namespaces, name=namespace)
        found = _usage(conn, namespace)
        assert found is not None  # deleted by no one
    return found


def check_limits(conn: Connection, limits: NamespaceLimits, before: Footprint) -> None:
    """OverQuota for the first limit that the transaction's writes, made since `before` was
    read with lock_usage, added to and left exceeded."""
    after = _usage(conn, limits.namespace)
    assert after is not None  # locked by lock_usage
    for what, used, now, limit in (
        ("bytes", before.bytes, after.bytes, limits.bytes),
        ("repositories", before.repositories, after.repositories, limits.repositories),
        ("tags", before.tags, after.tags, limits.tags),
    ):
        if limit is not None and now > used and now > limit:
            raise OverQuota(limits.namespace, what, used, limit, now - used)
