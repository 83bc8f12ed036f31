"""Robot accounts' tokens in the metadata database: auth/robots.py's records over the
MetadataStore every worker and instance shares (the server joins auth and metadata here), and
what `portside token` does with them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from portside.auth.base import Access, parse_scopes, sorted_actions
from portside.auth.robots import Robot, check_name, new_secret, parse_robot_scopes
from portside.metadata.base import RobotStore, RobotToken


def _seconds(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def robot_of(token: RobotToken) -> Robot:
    return Robot(
        name=token.name,
        scopes=frozenset(parse_scopes([token.scopes])),
        created_at=token.created_at.timestamp(),
        expires_at=_seconds(token.expires_at),
        last_used_at=_seconds(token.last_used_at),
    )


def scope_text(scopes: Iterable[Access]) -> str:
    return " ".join(
        sorted(f"{a.type}:{a.name}:{','.join(sorted_actions(a.actions))}" for a in scopes)
    )


class MetadataRobotRecords:
    """auth.robots.RobotRecords over a RobotStore."""

    def __init__(self, metadata: RobotStore) -> None:
        self.metadata = metadata

    async def by_hash(self, token_hash: str) -> Robot | None:
        found = await self.metadata.find_robot(token_hash)
        return None if found is None else robot_of(found)

    async def by_name(self, name: str) -> Robot | None:
        found = await self.metadata.robot_named(name)
        return None if found is None else robot_of(found)

    async def used(self, token_hash: str, at: float) -> None:
        await self.metadata.use_robot(token_hash, datetime.fromtimestamp(at, UTC))


class NameTaken(ValueError):
    pass


async def create_robot(
    metadata: RobotStore, name: str, scopes: Iterable[str], lifetime: timedelta | None
) -> tuple[RobotToken, str]:
    """A new robot's record and its secret (shown once, never stored). Raises InvalidRobot or
    NameTaken."""
    check_name(name)
    granted = parse_robot_scopes(scopes)
    secret, token_hash = new_secret()
    now = datetime.now(UTC)
    token = RobotToken(
        token_hash=token_hash,
        name=name,
        scopes=scope_text(granted),
        created_at=now,
        expires_at=None if lifetime is None else now + lifetime,
    )
    if not await metadata.add_robot(token):
        raise NameTaken(f"a robot named {name!r} exists (revoke it first)")
    return token, secret
