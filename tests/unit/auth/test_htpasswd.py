"""htpasswd verification in every format, reload on change, the verified-credentials cache, and
the file management behind `portside user`."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from passlib import hash as passlib_hash  # type: ignore[import-untyped]

from portside.auth.htpasswd import (
    HtpasswdFile,
    InvalidUser,
    Scheme,
    UserExists,
    UserNotFound,
    add_user,
    hash_password,
    list_users,
    remove_user,
    set_password,
)

PASSWORD = "s3cret-pässword"
HTPASSWD = shutil.which("htpasswd")
FAST_ROUNDS = {Scheme.BCRYPT: 4, Scheme.SHA256: 5000, Scheme.SHA512: 5000}
needs_htpasswd = pytest.mark.skipif(HTPASSWD is None, reason="apache2-utils' htpasswd missing")

# Entries made by libpass itself, one per format Apache's htpasswd writes (and glibc's $1$).
LIBPASS_ENTRIES: dict[str, Callable[[str], str]] = {
    "bcrypt-2y": lambda p: passlib_hash.bcrypt.using(ident="2y", rounds=4).hash(p),
    "bcrypt-2a": lambda p: passlib_hash.bcrypt.using(ident="2a", rounds=4).hash(p),
    "bcrypt-2b": lambda p: passlib_hash.bcrypt.using(ident="2b", rounds=4).hash(p),
    "apr1": passlib_hash.apr_md5_crypt.hash,
    "sha1": passlib_hash.ldap_sha1.hash,
    "crypt": passlib_hash.des_crypt.hash,
    "sha256": passlib_hash.sha256_crypt.using(rounds=5000).hash,
    "sha512": passlib_hash.sha512_crypt.using(rounds=5000).hash,
    "md5-crypt": passlib_hash.md5_crypt.hash,
}


def write(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "htpasswd"


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts calls of bcrypt's verification, the slow part the cache skips."""
    calls: list[bytes] = []
    original = passlib_hash.bcrypt.verify

    def counting(secret: bytes, hash: str) -> bool:
        calls.append(secret)
        return bool(original(secret, hash))

    monkeypatch.setattr(passlib_hash.bcrypt, "verify", counting)
    return calls


# Formats ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", sorted(LIBPASS_ENTRIES))
def test_every_format_verifies(path: Path, scheme: str) -> None:
    password = "secret" if scheme == "crypt" else PASSWORD  # DES reads 8 characters
    write(path, f"alice:{LIBPASS_ENTRIES[scheme](password)}\n")
    users = HtpasswdFile(path)
    assert users.verify("alice", password)
    assert not users.verify("alice", password + "x" if scheme != "crypt" else "secreT")
    assert not users.verify("bob", password)


def test_plaintext_only_when_allowed(path: Path) -> None:
    write(path, "alice:plain-password\n")
    assert not HtpasswdFile(path).verify("alice", "plain-password")
    allowed = HtpasswdFile(path, allow_plaintext=True)
    assert allowed.verify("alice", "plain-password")
    assert not allowed.verify("alice", "plain-passwor")


def test_plaintext_that_looks_like_des_crypt(path: Path) -> None:
    write(path, "alice:abcdefghijklm\n")
    assert not HtpasswdFile(path).verify("alice", "abcdefghijklm")
    assert HtpasswdFile(path, allow_plaintext=True).verify("alice", "abcdefghijklm")


def test_bcrypt_counts_72_bytes_as_crypt_blowfish(path: Path) -> None:
    long = "x" * 100
    write(path, f"alice:{hash_password(long, rounds=4)}\n")
    users = HtpasswdFile(path)
    assert users.verify("alice", long)
    assert users.verify("alice", "x" * 72)
    assert not users.verify("alice", "x" * 71)


def test_comments_blanks_junk_and_duplicates(path: Path) -> None:
    first, second = hash_password("one", rounds=4), hash_password("two", rounds=4)
    write(path, f"# admins\n\n  alice:{first}:extra field\r\njunk line\nalice:{second}\n")
    users = HtpasswdFile(path)
    assert users.users() == ["alice"]
    assert users.verify("alice", "one")  # the first line wins, as in Apache
    assert not users.verify("alice", "two")


def test_unknown_format_is_refused_and_nothing_secret_is_logged(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(path, "alice:$argon2id$v=19$whatever\n")
    with caplog.at_level(logging.DEBUG):
        assert not HtpasswdFile(path).verify("alice", "the-password")
    assert "the-password" not in caplog.text
    assert "$argon2id" not in caplog.text


def test_missing_file_has_no_users(path: Path) -> None:
    users = HtpasswdFile(path)
    assert users.users() == []
    assert not users.verify("alice", "x")


@pytest.mark.parametrize("scheme", list(Scheme))
def test_hash_password_round_trips(path: Path, scheme: Scheme) -> None:
    password = "secret" if scheme is Scheme.CRYPT else PASSWORD
    rounds = FAST_ROUNDS.get(scheme)
    write(path, f"alice:{hash_password(password, scheme, rounds=rounds)}\n")
    users = HtpasswdFile(path, allow_plaintext=scheme is Scheme.PLAIN)
    assert users.verify("alice", password)
    assert not users.verify("alice", "wrong")


def test_bcrypt_is_written_as_apache_does() -> None:
    entry = hash_password("x")
    assert entry.startswith("$2y$12$")


# Cross-check with Apache's own htpasswd -----------------------------------------------------


APACHE_FLAGS = {"-B": "bcrypt", "-m": "md5", "-s": "sha1", "-d": "crypt", "-2": "sha256"}
APACHE_FLAGS |= {"-5": "sha512", "-p": "plain"}


@needs_htpasswd
@pytest.mark.parametrize("flag", sorted(APACHE_FLAGS))
def test_apache_htpasswd_entries_verify(path: Path, flag: str) -> None:
    assert HTPASSWD is not None
    password = "secret" if flag == "-d" else PASSWORD
    line = subprocess.run(
        [HTPASSWD, f"-nb{flag[1]}", "alice", password], check=True, capture_output=True, text=True
    ).stdout.strip()
    write(path, line + "\n")
    users = HtpasswdFile(path, allow_plaintext=flag == "-p")
    assert users.verify("alice", password)
    assert not users.verify("alice", "wrong")


@needs_htpasswd
def test_apache_bcrypt_of_a_long_password(path: Path) -> None:
    assert HTPASSWD is not None
    long = "y" * 90
    line = subprocess.run(
        [HTPASSWD, "-nbB", "alice", long], check=True, capture_output=True, text=True
    ).stdout.strip()
    write(path, line + "\n")
    assert HtpasswdFile(path).verify("alice", long)


@needs_htpasswd
@pytest.mark.parametrize("scheme", [s for s in Scheme if s is not Scheme.PLAIN])
def test_apache_htpasswd_verifies_our_entries(path: Path, scheme: Scheme) -> None:
    assert HTPASSWD is not None
    password = "secret" if scheme is Scheme.CRYPT else PASSWORD
    add_user(path, "alice", password, scheme=scheme, rounds=FAST_ROUNDS.get(scheme))
    good = subprocess.run([HTPASSWD, "-vb", str(path), "alice", password], capture_output=True)
    bad = subprocess.run([HTPASSWD, "-vb", str(path), "alice", "wrong"], capture_output=True)
    assert good.returncode == 0, good.stderr
    assert bad.returncode != 0


# Reload -------------------------------------------------------------------------------------


def test_file_is_read_again_when_it_changes(path: Path) -> None:
    add_user(path, "alice", "old", rounds=4)
    users = HtpasswdFile(path)
    assert users.verify("alice", "old")
    set_password(path, "alice", "new", rounds=4)  # atomic replace: a new inode
    assert users.verify("alice", "new")
    assert not users.verify("alice", "old")
    add_user(path, "bob", "pw", rounds=4)
    assert users.users() == ["alice", "bob"]
    assert "bob" in users
    assert "carol" not in users


def test_in_place_edit_of_the_same_size_is_seen(path: Path) -> None:
    write(path, f"alice:{hash_password('aaaa', rounds=4)}\n")
    users = HtpasswdFile(path)
    assert users.verify("alice", "aaaa")
    before = path.stat()
    with path.open("r+") as file:  # same inode, same size
        file.write(f"alice:{hash_password('bbbb', rounds=4)}\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the old mtime
    assert users.verify("alice", "bbbb")
    assert not users.verify("alice", "aaaa")


def test_removed_file_removes_everyone(path: Path) -> None:
    add_user(path, "alice", "pw", rounds=4)
    users = HtpasswdFile(path)
    assert users.verify("alice", "pw")
    path.unlink()
    assert not users.verify("alice", "pw")
    assert users.users() == []


# Verification costs: a hash per call (auth/authenticator.py remembers verified logins) -------


def test_every_verify_hashes(path: Path, bcrypt_calls: list[bytes]) -> None:
    add_user(path, "alice", "pw", rounds=4)
    users = HtpasswdFile(path)
    assert users.verify("alice", "pw")
    for _ in range(3):
        assert not users.verify("alice", "wrong")
    assert users.verify("alice", "pw")
    assert len(bcrypt_calls) == 1 + 3 + 1


def test_unknown_users_cost_a_hash_too(path: Path, bcrypt_calls: list[bytes]) -> None:
    add_user(path, "alice", "pw", rounds=4)
    users = HtpasswdFile(path)
    start = time.perf_counter()
    assert not users.verify("bob", "pw")  # makes the dummy hash: as slow as checking one
    assert time.perf_counter() - start > 0.0005
    assert not users.verify("bob", "pw")
    assert len(bcrypt_calls) == 1


def test_the_version_changes_with_the_file(path: Path) -> None:
    add_user(path, "alice", "pw", rounds=4)
    add_user(path, "bob", "pw2", rounds=4)
    users = HtpasswdFile(path)
    before = users.version()
    remove_user(path, "bob")  # even a change to another user
    assert users.version() not in (before, None)
    path.unlink()
    assert users.version() is None


def test_the_file_holds_no_plaintext_in_memory(path: Path) -> None:
    add_user(path, "alice", "very-secret-pw", rounds=4)
    users = HtpasswdFile(path)
    assert users.verify("alice", "very-secret-pw")
    state = repr(vars(users))
    assert "very-secret-pw" not in state
    assert b"very-secret-pw".hex() not in state


# Managing the file ----------------------------------------------------------------------------


def test_add_creates_a_private_file(path: Path) -> None:
    assert add_user(path, "alice", "pw", rounds=4) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    line = path.read_text()
    assert line.startswith("alice:$2y$04$")
    assert "pw\n" not in line


def test_add_existing_needs_replace(path: Path) -> None:
    add_user(path, "alice", "one", rounds=4)
    with pytest.raises(UserExists):
        add_user(path, "alice", "two", rounds=4)
    assert add_user(path, "alice", "two", rounds=4, replace=True) is True
    assert HtpasswdFile(path).verify("alice", "two")


def test_other_lines_and_comments_are_kept(path: Path) -> None:
    carol = hash_password("c", Scheme.MD5)
    original = f"# managed by hand\r\nbob:{carol}\n\n# end, no newline\ncarol:{carol}"
    path.write_bytes(original.encode())
    add_user(path, "alice", "pw", rounds=4)
    text = path.read_bytes().decode()
    assert text.startswith(original + "\nalice:$2y$")
    set_password(path, "bob", "new", scheme=Scheme.SHA512, rounds=5000)
    lines = path.read_bytes().decode().split("\n")
    assert lines[0] == "# managed by hand\r"
    assert lines[1].startswith("bob:$6$")
    assert lines[2:5] == ["", "# end, no newline", f"carol:{carol}"]
    remove_user(path, "bob")
    assert path.read_bytes().decode().startswith("# managed by hand\r\n\n# end, no newline\ncarol:")


def test_list_remove_and_errors(path: Path) -> None:
    assert list_users(path) == []
    for name in ("carol", "alice", "bob"):
        add_user(path, name, "pw", scheme=Scheme.SHA1)
    assert list_users(path) == ["carol", "alice", "bob"]
    remove_user(path, "alice")
    assert list_users(path) == ["carol", "bob"]
    with pytest.raises(UserNotFound):
        remove_user(path, "alice")
    with pytest.raises(UserNotFound):
        set_password(path, "alice", "pw")


def test_group_readable_mode_is_kept_world_readable_is_not(path: Path) -> None:
    add_user(path, "alice", "pw", scheme=Scheme.SHA1)
    path.chmod(0o640)
    add_user(path, "bob", "pw", scheme=Scheme.SHA1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o644)
    remove_user(path, "bob")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_writes_leave_no_temporary_files(path: Path) -> None:
    add_user(path, "alice", "pw", scheme=Scheme.SHA1)
    remove_user(path, "alice")
    assert sorted(p.name for p in path.parent.iterdir()) == ["htpasswd", "htpasswd.lock"]


@pytest.mark.parametrize("username", ["", "a:b", "#admin", "a b", "tab\t", "new\nline", "x" * 256])
def test_invalid_usernames(path: Path, username: str) -> None:
    with pytest.raises(InvalidUser):
        add_user(path, username, "pw")


@pytest.mark.parametrize("password", ["", "a:b", "line\nbreak", " padded"])
def test_invalid_plaintext_passwords(password: str) -> None:
    with pytest.raises(InvalidUser):
        hash_password(password, Scheme.PLAIN)


def test_rounds_only_where_a_scheme_has_them() -> None:
    assert hash_password("pw", Scheme.SHA256, rounds=6000).startswith("$5$rounds=6000$")
    with pytest.raises(ValueError, match="no rounds"):
        hash_password("pw", Scheme.MD5, rounds=5)
