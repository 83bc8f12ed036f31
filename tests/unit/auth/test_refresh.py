"""Refresh tokens: bound to a user and a service, stored hashed, in memory or in the metadata
database (through the server's adapter, on SQLite here; tests/contract runs the store's own
contract on SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from auth_helpers import FakeClock
from sqlalchemy import create_engine, text

from portside.auth.refresh import (
    LAST_USE_GRANULARITY,
    MemoryRefreshTokenStore,
    RefreshRecord,
    RefreshTokenInvalid,
    RefreshTokens,
    RefreshTokenStore,
    token_hash,
)
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.server.refresh import MetadataRefreshTokenStore

SERVICE = "registry.example.com"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refresh") / "migrated.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database(migrated: Path, tmp_path: Path) -> Path:
    return Path(shutil.copyfile(migrated, tmp_path / "registry.db"))


@pytest.fixture(params=["memory", "metadata"])
async def store(request: pytest.FixtureRequest, database: Path) -> AsyncIterator[RefreshTokenStore]:
    if request.param == "memory":
        yield MemoryRefreshTokenStore()
        return
    metadata = SqlMetadataStore(f"sqlite:///{database}")
    yield MetadataRefreshTokenStore(metadata)
    await metadata.close()


async def test_issue_and_redeem(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, clock=clock)
    token = await tokens.issue("alice", SERVICE)
    assert len(token) >= 43
    assert await tokens.redeem(token, SERVICE) == "alice"
    assert await tokens.redeem(token, SERVICE) == "alice"  # Docker reuses its token
    assert await tokens.issue("alice", SERVICE) != token


async def test_the_record(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, lifetime=3600, clock=clock)
    token = await tokens.issue("alice", SERVICE)
    assert await store.get(token_hash(token)) == RefreshRecord(
        "alice", SERVICE, clock.now, clock.now + 3600
    )


async def test_bound_to_the_service(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, clock=clock)
    token = await tokens.issue("alice", SERVICE)
    with pytest.raises(RefreshTokenInvalid, match="another service"):
        await tokens.redeem(token, "other.example.com")
    assert await tokens.redeem(token, SERVICE) == "alice"


async def test_unknown_and_revoked(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, clock=clock)
    token = await tokens.issue("alice", SERVICE)
    with pytest.raises(RefreshTokenInvalid, match="unknown"):
        await tokens.redeem(token + "x", SERVICE)
    await tokens.revoke(token)
    await tokens.revoke(token)
    with pytest.raises(RefreshTokenInvalid, match="unknown"):
        await tokens.redeem(token, SERVICE)


async def test_revoke_a_user(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, clock=clock)
    alices = [await tokens.issue("alice", SERVICE) for _ in range(3)]
    bobs = await tokens.issue("bob", SERVICE)
    assert await tokens.revoke_user("alice") == 3
    assert await tokens.revoke_user("alice") == 0
    for token in alices:
        with pytest.raises(RefreshTokenInvalid):
            await tokens.redeem(token, SERVICE)
    assert await tokens.redeem(bobs, SERVICE) == "bob"


async def test_expiry_forgets_the_token(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, lifetime=3600, clock=clock)
    token = await tokens.issue("alice", SERVICE)
    clock.advance(3599)
    assert await tokens.redeem(token, SERVICE) == "alice"
    clock.advance(1)
    with pytest.raises(RefreshTokenInvalid, match="expired"):
        await tokens.redeem(token, SERVICE)
    assert await store.get(token_hash(token)) is None


async def test_no_lifetime_lasts_until_revoked(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, lifetime=None, clock=clock)
    token = await tokens.issue("alice", SERVICE)
    clock.advance(10 * 365 * 86400)
    assert await tokens.redeem(token, SERVICE) == "alice"
    record = await store.get(token_hash(token))
    assert record is not None
    assert record.expires_at is None


async def last_used(store: RefreshTokenStore, hashed: str) -> float | None:
    record = await store.get(hashed)
    assert record is not None
    return record.last_used_at


async def test_last_use_is_recorded_now_and_then(
    store: RefreshTokenStore, clock: FakeClock
) -> None:
    tokens = RefreshTokens(store, clock=clock)
    token = await tokens.issue("alice", SERVICE)
    hashed = token_hash(token)
    assert await last_used(store, hashed) is None
    first = clock.now
    await tokens.redeem(token, SERVICE)
    assert await last_used(store, hashed) == first
    clock.advance(LAST_USE_GRANULARITY - 1)
    await tokens.redeem(token, SERVICE)  # recorded a moment ago: no write
    assert await last_used(store, hashed) == first
    clock.advance(1)
    await tokens.redeem(token, SERVICE)
    assert await last_used(store, hashed) == clock.now


async def test_only_the_hash_is_stored(database: Path, clock: FakeClock) -> None:
    metadata = SqlMetadataStore(f"sqlite:///{database}")
    try:
        token = await RefreshTokens(MetadataRefreshTokenStore(metadata), clock=clock).issue(
            "alice", SERVICE
        )
    finally:
        await metadata.close()
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM refresh_tokens")).all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    assert rows[0].token_hash == token_hash(token)
    assert token not in repr(rows)
    assert token.encode() not in database.read_bytes()


async def test_a_store_per_worker_shares_the_tokens(database: Path, clock: FakeClock) -> None:
    """Two stores over one database, as two workers or two instances hold."""
    one = SqlMetadataStore(f"sqlite:///{database}")
    two = SqlMetadataStore(f"sqlite:///{database}")
    try:
        token = await RefreshTokens(MetadataRefreshTokenStore(one), clock=clock).issue(
            "alice", SERVICE
        )
        other = RefreshTokens(MetadataRefreshTokenStore(two), clock=clock)
        assert await other.redeem(token, SERVICE) == "alice"
    finally:
        await one.close()
        await two.close()
