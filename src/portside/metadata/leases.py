"""Named leases with an expiry: which process collects garbage, when the next run is due, who
fills a cached blob."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, delete, select, update

from portside.metadata.base import Lease
from portside.metadata.engine import Database
from portside.metadata.statements import insert_missing, now, utc
from portside.metadata.tables import leases


class SqlLeases(Database):
    """Lease writes commit without waiting for the disk: a lease lost to a power cut ends with
    the holder it stood for, and an expiry is what protects against a holder that is gone."""

    async def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> Lease:
        def run(conn: Connection) -> Lease:
            stamp = now()
            if insert_missing(conn, leases, name=name, holder=holder, expires_at=stamp + ttl):
                return Lease(name, holder, stamp + ttl)
            row = conn.execute(
                select(leases.c.holder, leases.c.expires_at)
                .where(leases.c.name == name)
                .with_for_update()
            ).one()
            if row.holder != holder and utc(row.expires_at) > stamp:
                return Lease(name, row.holder, utc(row.expires_at))
            conn.execute(
                update(leases)
                .where(leases.c.name == name)
                .values(holder=holder, expires_at=stamp + ttl)
            )
            return Lease(name, holder, stamp + ttl)

        return await self._write(run, durable=False)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._write(
            lambda conn: conn.execute(
                delete(leases).where(leases.c.name == name, leases.c.holder == holder)
            ),
            durable=False,
        )
