"""The Authenticator: logins through its one cache of verified logins (one hash for concurrent
misses, none on hits; until its ttl or a change of the file), failed-login limits, and its one
cache of verified bearer tokens."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import pytest
from auth_helpers import FakeClock, MemoryFailureLog

from portside.auth.authenticator import (
    FILE_CHECK_SECONDS,
    Authenticator,
    LoginFailed,
    LoginThrottled,
    NoTokenVerifier,
)
from portside.auth.base import Identity, repository
from portside.auth.htpasswd import HtpasswdFile, add_user, remove_user
from portside.auth.keys import KeySet, SigningKey
from portside.auth.permissions import AccessConfig, Authorizer
from portside.auth.ratelimit import LoginLimiter
from portside.auth.tokens import TokenExpired, TokenIssuer, TokenVerifier

AUTHORIZER = Authorizer(AccessConfig(groups={"developers": ("alice",)}))


class CountingHtpasswd(HtpasswdFile):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verified: list[str] = []

    def verify(self, username: str, password: str) -> bool:
        self.verified.append(username)
        return super().verify(username, password)


@pytest.fixture
def htpasswd(tmp_path: Path) -> CountingHtpasswd:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "alice-pw", rounds=4)
    add_user(path, "bob", "bob-pw", rounds=4)
    return CountingHtpasswd(path)


def limiter(failures: int = 3) -> LoginLimiter:
    return LoginLimiter(MemoryFailureLog(), failures, 60)


async def test_a_login_gives_the_identity_with_its_groups(htpasswd: CountingHtpasswd) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd)
    identity = await authenticator.login("alice", "alice-pw", "10.0.0.1")
    assert identity == Identity("alice", frozenset({"developers"}))


async def test_a_second_login_with_the_same_credentials_hashes_nothing(
    htpasswd: CountingHtpasswd,
) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd)
    for _ in range(3):
        await authenticator.login("alice", "alice-pw", "10.0.0.1")
    assert htpasswd.verified == ["alice"]


async def test_concurrent_misses_with_the_same_credentials_share_one_hash(
    htpasswd: CountingHtpasswd,
) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd)
    results: list[Identity] = []

    async def login(password: str) -> None:
        with contextlib.suppress(LoginFailed):
            results.append(await authenticator.login("alice", password, "10.0.0.1"))

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(login, "alice-pw")
        group.start_soon(login, "wrong")

    assert len(results) == 10
    assert sorted(htpasswd.verified) == [
        "alice",
        "alice",
    ]  # the right password once, the wrong once


async def test_wrong_passwords_fail_and_are_limited(htpasswd: CountingHtpasswd) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd, limiter=limiter(2))
    for _ in range(2):
        with pytest.raises(LoginFailed):
            await authenticator.login("bob", "guess", "10.0.0.1")
    hashed = len(htpasswd.verified)

    with pytest.raises(LoginThrottled) as throttled:
        await authenticator.login("bob", "bob-pw", "10.0.0.2")  # the username is throttled
    with pytest.raises(LoginThrottled):
        await authenticator.login("alice", "alice-pw", "10.0.0.1")  # so is the address

    assert 0 < throttled.value.retry_after <= 60
    assert len(htpasswd.verified) == hashed  # a refused login costs no hash
    assert await authenticator.login("alice", "alice-pw", "10.0.0.3")


async def test_without_an_htpasswd_file_no_one_logs_in() -> None:
    with pytest.raises(LoginFailed):
        await Authenticator(AUTHORIZER).login("alice", "alice-pw", "10.0.0.1")


def make_tokens(clock: FakeClock) -> tuple[TokenIssuer, TokenVerifier]:
    key = SigningKey.generate()
    issuer = TokenIssuer(key, "portside", lifetime=60, clock=clock)
    verifier = TokenVerifier(
        KeySet.from_signing_key(key), issuer="portside", audience="svc", clock=clock
    )
    return issuer, verifier


def test_a_verified_token_is_remembered_until_it_expires(clock: FakeClock) -> None:
    issuer, verifier = make_tokens(clock)
    calls: list[str] = []
    verify = verifier.verify

    def spy(token: str) -> Any:
        calls.append(token)
        return verify(token)

    verifier.verify = spy  # type: ignore[method-assign]
    authenticator = Authenticator(AUTHORIZER, verifier=verifier, clock=clock)
    token = issuer.issue("alice", "svc", [repository("a", "pull")]).token

    for _ in range(3):
        assert authenticator.bearer(token).subject == "alice"
    assert len(calls) == 1

    clock.advance(61)  # past exp, within the verifier's leeway: verified again, not cached
    authenticator.bearer(token)
    assert len(calls) == 2
    clock.advance(60)
    with pytest.raises(TokenExpired):
        authenticator.bearer(token)


def test_the_token_cache_is_bounded(clock: FakeClock) -> None:
    issuer, verifier = make_tokens(clock)
    authenticator = Authenticator(AUTHORIZER, verifier=verifier, token_cache_size=2, clock=clock)
    for _ in range(5):
        authenticator.bearer(issuer.issue("alice", "svc", []).token)
    assert len(authenticator._tokens) <= 2


async def test_a_remembered_login_expires(htpasswd: CountingHtpasswd, clock: FakeClock) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd, login_ttl=60, clock=clock)
    await authenticator.login("alice", "alice-pw", "10.0.0.1")
    clock.advance(59)
    await authenticator.login("alice", "alice-pw", "10.0.0.1")
    assert htpasswd.verified == ["alice"]
    clock.advance(2)
    await authenticator.login("alice", "alice-pw", "10.0.0.1")
    assert htpasswd.verified == ["alice", "alice"]


async def test_a_change_of_the_file_forgets_the_logins(
    htpasswd: CountingHtpasswd, clock: FakeClock
) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd, clock=clock)
    await authenticator.login("alice", "alice-pw", "10.0.0.1")
    remove_user(htpasswd.path, "bob")  # even a change to another user
    clock.advance(FILE_CHECK_SECONDS)
    await authenticator.login("alice", "alice-pw", "10.0.0.1")
    assert htpasswd.verified == ["alice", "alice"]
    remove_user(htpasswd.path, "alice")
    clock.advance(FILE_CHECK_SECONDS)
    with pytest.raises(LoginFailed):
        await authenticator.login("alice", "alice-pw", "10.0.0.1")


async def test_wrong_passwords_are_never_remembered(htpasswd: CountingHtpasswd) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd)
    for _ in range(3):
        with pytest.raises(LoginFailed):
            await authenticator.login("alice", "wrong", "10.0.0.1")
    assert htpasswd.verified == ["alice"] * 3


async def test_the_login_cache_is_bounded_and_holds_no_password(
    htpasswd: CountingHtpasswd,
) -> None:
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd, login_cache_size=1)
    await authenticator.login("alice", "alice-pw", "10.0.0.1")
    await authenticator.login("bob", "bob-pw", "10.0.0.1")
    assert len(authenticator._logins) == 1
    assert "bob-pw" not in repr(vars(authenticator))
    assert b"bob-pw".hex() not in repr(vars(authenticator))


async def test_a_success_writes_nothing_unless_the_username_had_failures(
    htpasswd: CountingHtpasswd,
) -> None:
    log = MemoryFailureLog()
    authenticator = Authenticator(AUTHORIZER, htpasswd=htpasswd, limiter=LoginLimiter(log, 3, 60))
    await authenticator.login("alice", "alice-pw", "10.0.0.1")
    assert log.writes == 0
    with pytest.raises(LoginFailed):
        await authenticator.login("bob", "guess", "10.0.0.1")
    assert log.writes == 2  # the address and the username
    await authenticator.login("bob", "bob-pw", "10.0.0.2")
    assert log.writes == 3  # bob's failures cleared


def test_bearer_tokens_need_a_trusted_issuer() -> None:
    with pytest.raises(NoTokenVerifier):
        Authenticator(AUTHORIZER).bearer("a.b.c")
