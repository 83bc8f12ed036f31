"""Refresh tokens: bound to a user and a service, stored hashed, in memory or in a file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from auth_helpers import FakeClock

from portside.auth.refresh import (
    FileRefreshTokenStore,
    MemoryRefreshTokenStore,
    RefreshRecord,
    RefreshTokenInvalid,
    RefreshTokens,
    RefreshTokenStore,
    token_hash,
)

SERVICE = "registry.example.com"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RefreshTokenStore:
    if request.param == "memory":
        return MemoryRefreshTokenStore()
    return FileRefreshTokenStore(tmp_path / "refresh.json")


def test_issue_and_redeem(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, clock=clock)
    token = tokens.issue("alice", SERVICE)
    assert len(token) >= 43
    assert tokens.redeem(token, SERVICE) == "alice"
    assert tokens.redeem(token, SERVICE) == "alice"  # Docker reuses the token it got at login
    assert tokens.issue("alice", SERVICE) != token


def test_bound_to_the_service(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, clock=clock)
    token = tokens.issue("alice", SERVICE)
    with pytest.raises(RefreshTokenInvalid, match="another service"):
        tokens.redeem(token, "other.example.com")
    assert tokens.redeem(token, SERVICE) == "alice"


def test_unknown_and_revoked(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, clock=clock)
    token = tokens.issue("alice", SERVICE)
    with pytest.raises(RefreshTokenInvalid):
        tokens.redeem(token + "x", SERVICE)
    tokens.revoke(token)
    tokens.revoke(token)
    with pytest.raises(RefreshTokenInvalid):
        tokens.redeem(token, SERVICE)


def test_expiry_forgets_the_token(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, lifetime=3600, clock=clock)
    token = tokens.issue("alice", SERVICE)
    clock.advance(3599)
    assert tokens.redeem(token, SERVICE) == "alice"
    clock.advance(1)
    with pytest.raises(RefreshTokenInvalid, match="expired"):
        tokens.redeem(token, SERVICE)
    assert store.get(token_hash(token)) is None


def test_no_lifetime_lasts_until_revoked(store: RefreshTokenStore, clock: FakeClock) -> None:
    tokens = RefreshTokens(store, lifetime=None, clock=clock)
    token = tokens.issue("alice", SERVICE)
    clock.advance(10 * 365 * 86400)
    assert tokens.redeem(token, SERVICE) == "alice"


def test_only_the_hash_is_stored(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "refresh.json"
    tokens = RefreshTokens(FileRefreshTokenStore(path), clock=clock)
    token = tokens.issue("alice", SERVICE)
    text = path.read_text()
    assert token not in text
    assert token_hash(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_store_is_shared_between_instances(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "refresh.json"
    token = RefreshTokens(FileRefreshTokenStore(path), clock=clock).issue("alice", SERVICE)
    assert RefreshTokens(FileRefreshTokenStore(path), clock=clock).redeem(token, SERVICE) == "alice"


def test_file_store_prune(tmp_path: Path) -> None:
    store = FileRefreshTokenStore(tmp_path / "refresh.json")
    store.put("a", RefreshRecord("alice", SERVICE, 0, 100))
    store.put("b", RefreshRecord("bob", SERVICE, 0, None))
    store.put("c", RefreshRecord("carol", SERVICE, 0, 300))
    assert store.prune(200) == 1
    assert store.get("a") is None
    assert store.get("b") == RefreshRecord("bob", SERVICE, 0, None)
    assert store.get("c") is not None
