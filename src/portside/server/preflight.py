"""What `portside serve` checks before its workers start: that its user can read and write what
it needs, and that the metadata database opens. A problem is one line naming the path and the
user (`portside: cannot write /srv/registry (permission denied for user portside)`), and the
command exits with status 1, rather than a traceback from a worker that crash-loops.

`problems(settings, ids)` is the check for any user and group ids, from the files' modes, so
it can be tested without switching users; `check_or_exit` runs it for this process, adds what
the modes cannot tell (a read-only filesystem), makes storage_path and, run as root, the files
the service needs owned by its user (see ownership.py).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from portside.config.settings import Settings
from portside.metadata.engine import make_engine
from portside.server.ownership import (
    OwnerUnclear,
    make_folders,
    owner_for,
    prepare_auth_files,
    prepare_database,
    service_owner,
    sqlite_file,
    user_name,
)

log = logging.getLogger("portside")

R: Final = 4
W: Final = 2
X: Final = 1
_VERBS: Final = {R: "read", R | W: "write", W: "write"}
# storage_path's folders are walked to check they are writable; a registry has a few hundred
# (blobs/<algorithm>/<2 hex>/) plus one file per upload in progress.
_WALK_LIMIT: Final = 20_000
_WRITTEN_FOLDERS: Final = ("uploads", "auth")


@dataclass(frozen=True)
class Ids:
    """A user as the kernel sees it: user id and the group ids it holds."""

    uid: int
    gids: frozenset[int]

    @classmethod
    def current(cls) -> Ids:
        return cls(os.geteuid(), frozenset({os.getegid(), *os.getgroups()}))

    @property
    def name(self) -> str:
        return user_name(self.uid)


@dataclass(frozen=True)
class Problem:
    path: Path
    verb: str  # read, write, create, open
    reason: str

    def __str__(self) -> str:
        return f"cannot {self.verb} {self.path} ({self.reason})"


def allowed(st: os.stat_result, ids: Ids, want: int) -> bool:
    """Whether the mode bits of `st` grant `want` (R|W|X bits) to ids; root may do anything
    but execute a file no one may execute."""
    if ids.uid == 0:
        return not want & X or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    if st.st_uid == ids.uid:
        bits = st.st_mode >> 6
    elif st.st_gid in ids.gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


class _Checker:
    def __init__(self, ids: Ids, probe: bool) -> None:
        self.ids = ids
        self.probe = probe  # ids are this process's: also ask the kernel (read-only mounts)
        self.found: list[Problem] = []

    def _denied(self, path: Path, st: os.stat_result, want: int) -> str | None:
        if not allowed(st, self.ids, want):
            return f"permission denied for user {self.ids.name}"
        access = (os.R_OK if want & R else 0) | (os.W_OK if want & W else 0)
        access |= os.X_OK if want & X else 0
        if self.probe and not os.access(path, access, effective_ids=True):
            if want & W and os.statvfs(path).f_flag & os.ST_RDONLY:
                return f"read-only file system, for user {self.ids.name}"
            return f"permission denied for user {self.ids.name}"
        return None

    def _reachable(self, path: Path, verb: str) -> bool:
        """Every folder above path can be searched."""
        for folder in reversed(path.parents):
            try:
                st = folder.stat()
            except OSError:
                return True  # what is missing is reported by the caller
            reason = self._denied(folder, st, X)
            if reason is not None:
                self.found.append(Problem(path, verb, f"{reason} on {folder}"))
                return False
        return True

    def need(self, path: Path, want: int, *, missing: str = "create") -> None:
        """path, a file or a folder, must grant want. If it is missing: `create` (the server
        makes it: the folder it goes in must be writable), `ok`, or `error`."""
        path = Path(os.path.abspath(path))
        verb = _VERBS.get(want & (R | W), "read")
        if not self._reachable(path, verb):
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            if missing == "create":
                self.creatable(path)
            elif missing == "error":
                self.found.append(Problem(path, verb, "it does not exist"))
            return
        except OSError as error:
            self.found.append(Problem(path, verb, error.strerror or str(error)))
            return
        if stat.S_ISDIR(st.st_mode):
            want |= X
        reason = self._denied(path, st, want)
        if reason is not None:
            self.found.append(Problem(path, verb, reason))

    def creatable(self, path: Path) -> None:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            self.found.append(Problem(path, "create", f"{folder} is not a folder"))
            return
        reason = self._denied(folder, folder.stat(), W | X)
        if reason is not None:
            self.found.append(Problem(path, "create", f"{reason} on {folder}"))


def _folders(root: Path) -> Iterator[tuple[Path, list[Path]]]:
    """storage_path's folders, each with the files in it that the server writes to (those
    at the top, as registry.db and its locks, and in uploads/ and auth/)."""
    seen = 0
    stack = [root]
    while stack and seen < _WALK_LIMIT:
        folder = stack.pop()
        files: list[Path] = []
        written = folder == root or folder.relative_to(root).parts[0] in _WRITTEN_FOLDERS
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif written and entry.is_file(follow_symlinks=False):
                        files.append(Path(entry.path))
        except OSError:
            pass  # an unreadable folder is reported as such
        yield folder, files


def problems(settings: Settings, ids: Ids, *, probe: bool = False) -> list[Problem]:
    """What the user `ids` could not read or write of what a server with `settings` needs."""
    check = _Checker(ids, probe)
    storage_path = Path(os.path.abspath(settings.storage_path))
    if settings.storage == "local":
        if storage_path.exists() and not storage_path.is_dir():
            return [Problem(storage_path, "use", "storage_path is not a folder")]
        check.need(storage_path, R | W)
        if not check.found and storage_path.is_dir():
            for folder, files in _folders(storage_path):
                check.need(folder, R | W)
                for file in files:
                    if file != settings.token_key_path:
                        check.need(file, R | W)
                if check.found:
                    break
    database = sqlite_file(settings.metadata_url)
    if database is not None and not check.found:
        database = Path(os.path.abspath(database))
        made = settings.storage == "local" and database.is_relative_to(storage_path)
        if made and not database.parent.is_dir():
            check.creatable(database)  # made with storage_path
        elif not database.parent.is_dir():
            check.found.append(
                Problem(database, "open database", f"its folder {database.parent} does not exist")
            )
        else:
            check.need(database.parent, R | W)
            for suffix in ("", "-wal", "-shm", "-writer.lock"):
                check.need(database.with_name(database.name + suffix), R | W)
    auth = settings.auth
    if auth is not None:
        if auth.htpasswd is not None:
            check.need(auth.htpasswd.path, R, missing="ok")  # the server warns: no users
        if auth.token is not None:
            check.need(settings.token_key_path, R)  # made on first start if missing
        if auth.external_token is not None:
            for given in (auth.external_token.rootcertbundle, auth.external_token.jwks):
                if given is not None:
                    check.need(given, R, missing="error")
    for tls in (settings.tls_certificate, settings.tls_key, settings.tls_client_ca):
        if tls is not None:
            check.need(tls, R, missing="error")
    return check.found


def _open_database(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as error:
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()
        shown = make_url(url).render_as_string(hide_password=True)
        raise SystemExit(
            f"portside: cannot open database_url {shown} (user {Ids.current().name}): "
            f"{cause[0] if cause else type(error).__name__}"
        ) from None
    finally:
        engine.dispose()


def _refuse(problem: Problem | str) -> SystemExit:
    return SystemExit(f"portside: {problem}")


def check_or_exit(settings: Settings) -> None:
    """Before `portside serve` starts workers: make storage_path, make the files the service
    needs owned by its user when run as root, check that this process can use everything,
    open the database. Exits with one line naming the path and the user on a problem."""
    ids = Ids.current()
    if ids.uid == 0 and (owner := service_owner(settings)) is not None:
        log.warning(
            "serving as root while storage_path %s is %s's: what it writes there is root's, "
            "which %s cannot use later; run as that user",
            settings.storage_path,
            user_name(owner.uid),
            user_name(owner.uid),
        )
    found = problems(settings, ids, probe=True)
    if found:
        raise _refuse(found[0])
    try:
        if settings.storage == "local":
            storage_path = settings.storage_path
            make_folders(storage_path, owner_for(storage_path))
        prepare_database(settings)
        prepare_auth_files(settings)
    except OwnerUnclear as error:
        raise _refuse(str(error)) from None
    except OSError as error:
        where = error.filename or settings.storage_path
        reason = (error.strerror or str(error)).lower()
        raise _refuse(f"cannot create {where} ({reason}, as user {ids.name})") from None
    _open_database(settings.metadata_url)
