"""Failed-login limits in a sliding window, per address and per username, over a failure log (in
memory here; the metadata database's in production), on a hand-moved clock."""

from __future__ import annotations

import pytest
from auth_helpers import FakeClock, MemoryFailureLog

from portside.auth.ratelimit import LoginLimiter


async def test_locked_after_the_limit_until_the_window_passes(clock: FakeClock) -> None:
    limiter = LoginLimiter(MemoryFailureLog(), 5, 60, clock=clock)
    for _ in range(4):
        await limiter.failure("10.0.0.1", "bob")
        clock.advance(1)
    assert (await limiter.standing("10.0.0.1", "bob")).retry_after == 0
    await limiter.failure("10.0.0.1", "bob")
    # the first failure, 4 s ago, leaves the window in 56 s
    assert (await limiter.standing("10.0.0.1", "bob")).retry_after == 56
    clock.advance(55.5)
    assert (await limiter.standing("10.0.0.1", "bob")).retry_after == 1  # whole seconds, up
    clock.advance(0.5)
    assert (await limiter.standing("10.0.0.1", "bob")).retry_after == 0


async def test_window_slides(clock: FakeClock) -> None:
    limiter = LoginLimiter(MemoryFailureLog(), 3, 60, clock=clock)
    await limiter.failure("a", "u")  # t=0
    clock.advance(30)
    await limiter.failure("a", "u")  # t=30
    clock.advance(31)
    await limiter.failure("a", "u")  # t=61: the first has left the window
    assert (await limiter.standing("a", "u")).retry_after == 0
    await limiter.failure("a", "u")  # t=61: three in the window, the oldest at 30
    assert (await limiter.standing("a", "u")).retry_after == 29


async def test_address_and_username_limit_apart(clock: FakeClock) -> None:
    limiter = LoginLimiter(MemoryFailureLog(), 2, 60, clock=clock)
    await limiter.failure("10.0.0.1", "alice")
    await limiter.failure("10.0.0.2", "bob")
    assert (await limiter.standing("10.0.0.1", "carol")).retry_after == 0
    await limiter.failure("10.0.0.1", "bob")
    assert (await limiter.standing("10.0.0.1", "carol")).retry_after == 60  # the address
    assert (await limiter.standing("10.0.0.3", "bob")).retry_after == 60  # the username
    assert (await limiter.standing("10.0.0.3", "alice")).retry_after == 0


async def test_a_success_clears_the_username_not_the_address(clock: FakeClock) -> None:
    limiter = LoginLimiter(MemoryFailureLog(), 2, 60, clock=clock)
    await limiter.failure("10.0.0.1", "bob")
    await limiter.failure("10.0.0.1", "bob")
    standing = await limiter.standing("10.0.0.2", "bob")
    assert standing.username_failed
    await limiter.success("bob")
    assert not (await limiter.standing("10.0.0.2", "bob")).username_failed
    assert (await limiter.standing("10.0.0.2", "bob")).retry_after == 0
    assert (await limiter.standing("10.0.0.1", "alice")).retry_after == 60


async def test_keys_are_stored_hashed(clock: FakeClock) -> None:
    log = MemoryFailureLog()
    await LoginLimiter(log, clock=clock).failure("10.0.0.1", "my-password-by-mistake")
    assert len(log.failures) == 2
    assert all(len(key) == 64 and "password" not in key for key in log.failures)


@pytest.mark.parametrize("args", [(0, 60), (5, 0)])
def test_limits_must_be_positive(args: tuple[int, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        LoginLimiter(MemoryFailureLog(), *args)
