"""Users and passwords in an Apache htpasswd file: verification, and the file management behind
`portside user add|remove|list|passwd`. (Verified logins are remembered by auth/authenticator.py.)

Every format Apache's `htpasswd` writes is read, told apart by its prefix:

    $2y$ $2a$ $2b$   bcrypt (-B)          $apr1$   Apache MD5 (-m, its default)
    $5$ / $6$        SHA-256 / SHA-512 crypt (-2 / -5)
    {SHA}            base64 SHA-1 (-s)    13 chars DES crypt (-d)
    anything else    plaintext (-p), only with `allow_plaintext`; otherwise the entry never matches

`$1$` (glibc MD5 crypt, which Apache accepts through crypt(3)) is read too. bcrypt passwords are
cut at 72 bytes as crypt_blowfish does. The file is read again whenever its inode, size, mtime or
ctime change; a missing or unreadable file has no users. Passwords are never stored or logged.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from passlib.hash import (  # type: ignore[import-untyped]
    apr_md5_crypt,
    bcrypt,
    des_crypt,
    ldap_sha1,
    md5_crypt,
    sha256_crypt,
    sha512_crypt,
)

from portside.auth._files import atomic_write, locked
from portside.auth.base import AuthError
from portside.auth.schemes import Scheme

log = logging.getLogger(__name__)

DEFAULT_BCRYPT_ROUNDS: Final = 12
FILE_MODE: Final = 0o600
# Never world-readable, whatever mode an operator gave the file before.
_KEPT_MODE_BITS: Final = 0o640
_BCRYPT_MAX: Final = 72
_DES = re.compile(r"[./0-9A-Za-z]{13}")
_USERNAME_MAX: Final = 255
# Unknown users cost a bcrypt check at the file's highest cost, up to this one.
_DUMMY_ROUNDS_MAX: Final = 14


class UserExists(AuthError):
    """`add_user` for a user already in the file (pass `replace=True` to overwrite)."""


class UserNotFound(AuthError):
    """`set_password` or `remove_user` for a user not in the file."""


class InvalidUser(AuthError, ValueError):
    """A username or password the file cannot hold."""


# Identifying an entry --------------------------------------------------------------------------

Verifier = Callable[[bytes, str], bool]


def _verify_bcrypt(password: bytes, entry: str) -> bool:
    # spec of crypt_blowfish: only the first 72 bytes count; the bcrypt module refuses more.
    return bool(bcrypt.verify(password[:_BCRYPT_MAX], entry))


def _hasher(handler: Any) -> Verifier:
    def verify(password: bytes, entry: str) -> bool:
        return bool(handler.verify(password, entry))

    return verify


_PREFIXES: Final[tuple[tuple[str, Verifier], ...]] = (
    ("$2y$", _verify_bcrypt),
    ("$2a$", _verify_bcrypt),
    ("$2b$", _verify_bcrypt),
    ("$apr1$", _hasher(apr_md5_crypt)),
    ("$5$", _hasher(sha256_crypt)),
    ("$6$", _hasher(sha512_crypt)),
    ("$1$", _hasher(md5_crypt)),
    ("{SHA}", _hasher(ldap_sha1)),
)


def _verify_plain(password: bytes, entry: str) -> bool:
    return hmac.compare_digest(password, entry.encode("utf-8", "surrogateescape"))


def _verifier(entry: str, allow_plaintext: bool) -> Verifier | None:
    for prefix, verifier in _PREFIXES:
        if entry.startswith(prefix):
            return verifier
    if _DES.fullmatch(entry):
        des = _hasher(des_crypt)
        if not allow_plaintext:
            return des

        # A 13-character plaintext password looks like DES crypt; Apache on platforms
        # without crypt(3) compares plaintext, so try both when plaintext is allowed.
        def des_or_plain(password: bytes, entry: str) -> bool:
            return des(password, entry) | _verify_plain(password, entry)

        return des_or_plain
    return _verify_plain if allow_plaintext else None


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# Reading the file ------------------------------------------------------------------------------

FileVersion = tuple[int, int, int, int, int]  # device, inode, size, mtime_ns, ctime_ns


def _version(st: os.stat_result) -> FileVersion:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _parse_line(line: str) -> tuple[str, str] | None:
    """(username, entry) of one line, None for comments, blanks and lines without a `:`.

    As Apache's mod_authn_file: surrounding whitespace is dropped and the entry ends at the next
    `:` (anything after it is ignored)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    username, sep, rest = line.partition(":")
    if not sep or not username:
        return None
    return username, rest.partition(":")[0]


@dataclass(frozen=True)
class _Snapshot:
    version: FileVersion | None
    entries: dict[str, str]  # username -> hash entry, first line wins as in Apache
    dummy_rounds: int


def _stat(path: Path) -> FileVersion | None:
    try:
        return _version(os.stat(path))
    except OSError:
        return None


def _read(path: Path) -> _Snapshot:
    """The file's entries. A missing or unreadable one has none (and its stat version, so that
    it is read again only once it changes)."""
    try:
        with path.open("rb") as file:
            version = _version(os.fstat(file.fileno()))
            text = file.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        log.warning("htpasswd file %s does not exist: no user can log in", path)
        return _Snapshot(None, {}, 5)
    except OSError as error:
        log.error("htpasswd file %s cannot be read (%s): no user can log in", path, error)
        return _Snapshot(_stat(path), {}, 5)
    entries: dict[str, str] = {}
    rounds = 5
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = _parse_line(line)
        if parsed is None:
            if line.strip() and not line.strip().startswith("#"):
                log.warning("htpasswd file %s line %d: no `user:hash`, ignored", path, number)
            continue
        username, entry = parsed
        entries.setdefault(username, entry)
        if entry.startswith(("$2y$", "$2a$", "$2b$")) and entry[4:6].isdigit():
            rounds = max(rounds, min(int(entry[4:6]), _DUMMY_ROUNDS_MAX))
    return _Snapshot(version, entries, rounds)


class HtpasswdFile:
    """Verifies usernames and passwords against an htpasswd file, safe to share between threads.

    `verify` costs one `stat` plus the password hash (bcrypt at cost 12 takes about a quarter of
    a second: run it off the event loop). `version` tells a cache of verified logins whether the
    file has changed since."""

    def __init__(self, path: Path | str, *, allow_plaintext: bool = False) -> None:
        self.path = Path(path)
        self.allow_plaintext = allow_plaintext
        self._lock = threading.Lock()
        self._snapshot = _read(self.path)
        self._dummies: dict[int, str] = {}

    # The snapshot -------------------------------------------------------------------------------

    def _current(self) -> _Snapshot:
        """The snapshot for the file as it is now, read again if it changed."""
        version = _stat(self.path)
        with self._lock:
            if version != self._snapshot.version:
                self._snapshot = _read(self.path)
            return self._snapshot

    def version(self) -> FileVersion | None:
        """The file's device, inode, size, mtime and ctime now; None when it cannot be read."""
        return _stat(self.path)

    def users(self) -> list[str]:
        """The usernames in the file, in file order."""
        return list(self._current().entries)

    def __contains__(self, username: object) -> bool:
        return username in self._current().entries

    # Verification ------------------------------------------------------------------------------

    def verify(self, username: str, password: str) -> bool:
        """True when the file has `username` and `password` matches its entry.

        Unknown users cost a bcrypt hash too, so timing does not tell which users exist."""
        snapshot = self._current()
        entry = snapshot.entries.get(username)
        if entry is None:
            self._burn(password, snapshot.dummy_rounds)
            return False
        verifier = _verifier(entry, self.allow_plaintext)
        if verifier is None:
            log.warning("htpasswd entry of user %r has an unknown format: login refused", username)
            self._burn(password, snapshot.dummy_rounds)
            return False
        try:
            return verifier(_encode(password), entry)
        except (ValueError, TypeError) as error:
            log.warning("htpasswd entry of user %r cannot be checked: %s", username, error)
            return False

    def _burn(self, password: str, rounds: int) -> None:
        """Spend about what a real bcrypt check would, against a hash of a random secret."""
        dummy = self._dummies.get(rounds)
        if dummy is None:  # making it costs what checking it would
            self._dummies[rounds] = bcrypt.using(rounds=rounds).hash(secrets.token_hex(16))
            return
        with contextlib.suppress(ValueError):
            _verify_bcrypt(_encode(password), dummy)


# Managing the file ---------------------------------------------------------------------------


def check_username(username: str) -> None:
    """Raise InvalidUser unless the htpasswd format can hold `username` (as Apache: no `:`,
    at most 255 bytes); whitespace, control characters and a leading `#` are refused too."""
    if not username or len(_encode(username)) > _USERNAME_MAX:
        raise InvalidUser("a username has 1 to 255 bytes")
    if ":" in username or username.startswith("#"):
        raise InvalidUser(f"a username cannot contain ':' or start with '#': {username!r}")
    if any(c.isspace() or not c.isprintable() for c in username):
        raise InvalidUser(f"a username cannot contain spaces or control characters: {username!r}")


def hash_password(
    password: str, scheme: Scheme | str = Scheme.BCRYPT, *, rounds: int | None = None
) -> str:
    """An htpasswd entry for `password`. `rounds` is bcrypt's cost (4-31, default 12) or the
    SHA-crypt rounds; other schemes take none. bcrypt entries use `$2y$` as Apache writes them."""
    scheme = Scheme(scheme)
    if not password:
        raise InvalidUser("empty passwords are refused")
    secret = _encode(password)
    if scheme is Scheme.BCRYPT:
        handler = bcrypt.using(ident="2y", rounds=rounds or DEFAULT_BCRYPT_ROUNDS)
        return str(handler.hash(secret[:_BCRYPT_MAX]))
    if scheme in (Scheme.SHA256, Scheme.SHA512):
        crypt = sha256_crypt if scheme is Scheme.SHA256 else sha512_crypt
        return str((crypt.using(rounds=rounds) if rounds else crypt).hash(secret))
    if rounds is not None:
        raise ValueError(f"the {scheme} scheme takes no rounds")
    if scheme is Scheme.MD5:
        return str(apr_md5_crypt.hash(secret))
    if scheme is Scheme.SHA1:
        return str(ldap_sha1.hash(secret))
    if scheme is Scheme.CRYPT:
        return str(des_crypt.hash(secret))
    if ":" in password or any(c in password for c in "\r\n") or password != password.strip():
        raise InvalidUser("a plaintext password cannot hold ':', line breaks or edge spaces")
    return password


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape").splitlines(keepends=True)
    except FileNotFoundError:
        return []


def _write_lines(path: Path, lines: list[str]) -> None:
    try:
        mode = path.stat().st_mode & _KEPT_MODE_BITS or FILE_MODE
    except FileNotFoundError:
        mode = FILE_MODE
    atomic_write(path, "".join(lines).encode("utf-8", "surrogateescape"), mode)


def _user_of(line: str) -> str | None:
    parsed = _parse_line(line)
    return parsed[0] if parsed else None


def list_users(path: Path | str) -> list[str]:
    """The usernames in the file, in file order (an absent file has none)."""
    users = (_user_of(line) for line in _read_lines(Path(path)))
    return list(dict.fromkeys(user for user in users if user is not None))


def _put(path: Path, username: str, entry: str, *, exists: bool | None) -> bool:
    """Write `entry` as the line of `username` under the file's lock; True if it was there.
    `exists` True requires the user, False forbids it, None takes either."""
    with locked(path):
        lines = _read_lines(path)
        indexes = [i for i, line in enumerate(lines) if _user_of(line) == username]
        if indexes and exists is False:
            raise UserExists(f"user {username!r} exists")
        if not indexes and exists is True:
            raise UserNotFound(f"no user {username!r}")
        if indexes:
            lines[indexes[0]] = entry
            for i in reversed(indexes[1:]):
                del lines[i]
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.append(entry)
        _write_lines(path, lines)
    return bool(indexes)


def add_user(
    path: Path | str,
    username: str,
    password: str,
    *,
    scheme: Scheme | str = Scheme.BCRYPT,
    rounds: int | None = None,
    replace: bool = False,
) -> bool:
    """Add `username`, or with `replace` also change the password of an existing one; True if
    it was already there. Raises UserExists (without `replace`) and InvalidUser.

    Creates the file (mode 0600) if needed. Other lines, comments included, are kept as they were;
    the file is replaced atomically under a lock, so concurrent calls do not lose each other."""
    check_username(username)
    entry = f"{username}:{hash_password(password, scheme, rounds=rounds)}\n"
    return _put(Path(path), username, entry, exists=None if replace else False)


def set_password(
    path: Path | str,
    username: str,
    password: str,
    *,
    scheme: Scheme | str = Scheme.BCRYPT,
    rounds: int | None = None,
) -> None:
    """Change the password of an existing user; raises UserNotFound if there is none."""
    entry = f"{username}:{hash_password(password, scheme, rounds=rounds)}\n"
    _put(Path(path), username, entry, exists=True)


def remove_user(path: Path | str, username: str) -> None:
    """Remove every line of `username`; raises UserNotFound if there is none."""
    path = Path(path)
    with locked(path):
        lines = _read_lines(path)
        kept = [line for line in lines if _user_of(line) != username]
        if len(kept) == len(lines):
            raise UserNotFound(f"no user {username!r}")
        _write_lines(path, kept)
