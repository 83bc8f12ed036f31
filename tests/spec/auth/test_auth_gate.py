"""The one memory of verified Basic logins (auth/authenticator.py): what it skips, and when it
lets go."""

from __future__ import annotations

from pathlib import Path

from portside.auth.authenticator import FILE_CHECK_SECONDS, Authenticator
from portside.auth.htpasswd import HtpasswdFile, add_user, set_password
from portside.auth.permissions import AccessConfig, Authorizer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting(HtpasswdFile):
    verified = 0

    def verify(self, username: str, password: str) -> bool:
        self.verified += 1
        return super().verify(username, password)


async def test_a_login_is_remembered_until_its_ttl_or_a_change_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "pw", rounds=4)
    clock = Clock()
    htpasswd = Counting(path)
    authenticator = Authenticator(
        Authorizer(AccessConfig()), htpasswd=htpasswd, login_ttl=60, clock=clock
    )
    identity = await authenticator.login("alice", "pw", "10.0.0.1")
    assert await authenticator.login("alice", "pw", "10.0.0.1") is identity
    assert htpasswd.verified == 1
    # a key per process: another one remembers nothing
    other = Authenticator(Authorizer(AccessConfig()), htpasswd=htpasswd)
    assert other._login_key("alice", "pw") != authenticator._login_key("alice", "pw")

    set_password(path, "alice", "new", rounds=4)
    assert await authenticator.login("alice", "pw", "10.0.0.1") is identity  # looked at later
    clock.now += FILE_CHECK_SECONDS
    assert await authenticator.login("alice", "new", "10.0.0.1") == identity
    assert htpasswd.verified == 2

    clock.now += 59
    assert await authenticator.login("alice", "new", "10.0.0.1") == identity
    assert htpasswd.verified == 2
    clock.now += 1
    await authenticator.login("alice", "new", "10.0.0.1")
    assert htpasswd.verified == 3
