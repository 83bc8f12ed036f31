"""Robot accounts' access tokens (auth/robots.py, server/robots.py), shared by every worker and
instance on the database: looked up by the hash of the secret a client presents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from portside.metadata.base import RobotToken
from portside.metadata.engine import Database
from portside.metadata.statements import utc
from portside.metadata.tables import robot_tokens


def _token(row: Any) -> RobotToken:
    return RobotToken(
        token_hash=row.token_hash,
        name=row.name,
        scopes=row.scopes,
        created_at=utc(row.created_at),
        expires_at=None if row.expires_at is None else utc(row.expires_at),
        last_used_at=None if row.last_used_at is None else utc(row.last_used_at),
    )


class SqlRobots(Database):
    async def add_robot(self, token: RobotToken) -> bool:
        def run(conn: Connection) -> None:
            conn.execute(
                insert(robot_tokens).values(
                    token_hash=token.token_hash,
                    name=token.name,
                    scopes=token.scopes,
                    created_at=token.created_at,
                    expires_at=token.expires_at,
                    last_used_at=token.last_used_at,
                )
            )

        try:
            await self._write(run)
        except IntegrityError:  # the name is taken
            return False
        return True

    async def find_robot(self, token_hash: str) -> RobotToken | None:
        query = select(robot_tokens).where(robot_tokens.c.token_hash == token_hash)
        row = await self._read(lambda conn: conn.execute(query).first())
        return None if row is None else _token(row)

    async def robot_named(self, name: str) -> RobotToken | None:
        query = select(robot_tokens).where(robot_tokens.c.name == name)
        row = await self._read(lambda conn: conn.execute(query).first())
        return None if row is None else _token(row)

    async def list_robots(self) -> list[RobotToken]:
        query = select(robot_tokens).order_by(robot_tokens.c.name)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [_token(row) for row in rows]

    async def use_robot(self, token_hash: str, at: datetime) -> None:
        statement = (
            update(robot_tokens)
            .where(robot_tokens.c.token_hash == token_hash)
            .values(last_used_at=at)
        )
        # A last-use stamp lost to a power cut harms nothing: no fsync for it.
        await self._write(lambda conn: conn.execute(statement), durable=False)

    async def delete_robot(self, name: str) -> bool:
        statement = delete(robot_tokens).where(robot_tokens.c.name == name)
        result = await self._write(lambda conn: conn.execute(statement))
        return bool(result.rowcount > 0)
