"""Failed-login limits in a sliding window, per address and per username, on a hand-moved clock."""

from __future__ import annotations

import pytest
from auth_helpers import FakeClock

from portside.auth.ratelimit import FailureWindow, LoginLimiter


def test_locked_after_the_limit_until_the_window_passes(clock: FakeClock) -> None:
    window = FailureWindow(5, 60, clock=clock)
    for _ in range(4):
        assert window.failure("k") == 0
        clock.advance(1)
    assert window.retry_after("k") == 0
    assert window.failure("k") == 56  # the first failure, 4 s ago, leaves the window in 56 s
    assert window.retry_after("k") == 56
    clock.advance(55.5)
    assert window.retry_after("k") == 0.5
    clock.advance(0.5)
    assert window.retry_after("k") == 0


def test_window_slides(clock: FakeClock) -> None:
    window = FailureWindow(3, 60, clock=clock)
    window.failure("k")  # t=0
    clock.advance(30)
    window.failure("k")  # t=30
    clock.advance(31)
    window.failure("k")  # t=61: the first has left the window
    assert window.retry_after("k") == 0
    clock.advance(1)
    assert window.failure("k") == 28  # t=62: three within 60 s, the oldest at t=30
    clock.advance(28)
    assert window.failure("k") == 31  # t=90: may try, fails: the last three at t=61, 62, 90


def test_keys_are_independent_and_reset(clock: FakeClock) -> None:
    window = FailureWindow(2, 60, clock=clock)
    window.failure("a")
    window.failure("a")
    assert window.retry_after("a") == 60
    assert window.retry_after("b") == 0
    window.reset("a")
    assert window.retry_after("a") == 0


def test_memory_is_bounded(clock: FakeClock) -> None:
    window = FailureWindow(1, 60, max_keys=2, clock=clock)
    for key in ("a", "b", "c"):
        window.failure(key)
    assert window.retry_after("a") == 0  # forgotten, the least recently failed
    assert window.retry_after("b") == 60
    assert window.retry_after("c") == 60


def test_prune(clock: FakeClock) -> None:
    window = FailureWindow(5, 60, clock=clock)
    window.failure("old")
    clock.advance(30)
    window.failure("new")
    clock.advance(30)
    assert window.prune() == 1
    assert window.prune() == 0


@pytest.mark.parametrize("args", [(0, 60), (5, 0), (5, -1)])
def test_invalid_settings(args: tuple[int, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        FailureWindow(*args)


def test_login_limiter_per_address_and_per_username(clock: FakeClock) -> None:
    limiter = LoginLimiter(
        per_address=FailureWindow(3, 60, clock=clock),
        per_username=FailureWindow(2, 300, clock=clock),
    )
    assert limiter.failure("10.0.0.1", "alice") == 0
    clock.advance(0.25)
    assert limiter.failure("10.0.0.2", "alice") == 300  # ceil(299.75): alice is locked anywhere
    assert limiter.retry_after("10.0.0.3", "alice") == 300
    assert limiter.retry_after("10.0.0.1", "bob") == 0
    limiter.failure("10.0.0.1", "bob")
    assert limiter.failure("10.0.0.1", "carol") == 60  # the address's third failure
    assert limiter.retry_after("10.0.0.1", "dave") == 60
    assert limiter.retry_after("10.0.0.1", None) == 60


def test_success_clears_the_username_not_the_address(clock: FakeClock) -> None:
    limiter = LoginLimiter(
        per_address=FailureWindow(2, 60, clock=clock),
        per_username=FailureWindow(2, 60, clock=clock),
    )
    limiter.failure("10.0.0.1", "alice")
    limiter.failure("10.0.0.1", "alice")
    limiter.success("alice")
    assert limiter.retry_after("10.0.0.2", "alice") == 0
    assert limiter.retry_after("10.0.0.1", "bob") == 60


def test_no_limits() -> None:
    limiter = LoginLimiter()
    assert limiter.failure("a", "b") == 0
    assert limiter.retry_after("a", "b") == 0
