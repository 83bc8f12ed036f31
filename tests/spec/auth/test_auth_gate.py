"""The gate's memory of recent Basic logins: what it skips, and when it lets go."""

from __future__ import annotations

from pathlib import Path

from portside.auth.base import Identity
from portside.auth.htpasswd import add_user, set_password
from portside.server.auth import FILE_CHECK_SECONDS, Caller, RecentLogins


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_login_is_remembered_until_its_ttl_or_a_change_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "pw", rounds=4)
    clock = Clock()
    recent = RecentLogins(path, ttl=60, clock=clock)
    caller = Caller(presented=True, identity=Identity("alice"))
    key = recent.key(b"Basic YWxpY2U6cHc=")
    assert key != recent.key(b"Basic YWxpY2U6cHd4")
    assert key != RecentLogins(path, ttl=60).key(b"Basic YWxpY2U6cHc=")  # a key per process

    recent.put(key, caller, recent.version())
    assert recent.get(key) is caller

    set_password(path, "alice", "new", rounds=4)
    assert recent.get(key) is caller  # the file is looked at every FILE_CHECK_SECONDS
    clock.now += FILE_CHECK_SECONDS
    assert recent.get(key) is None

    recent.put(key, caller, recent.version())
    clock.now += 59
    assert recent.get(key) is caller
    clock.now += 1
    assert recent.get(key) is None
