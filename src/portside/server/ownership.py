"""Who owns the files a command run as root makes for the service.

`sudo portside user add` or `sudo portside gc` would otherwise leave root-owned files (an
htpasswd file, registry.db, its lock) that the service's unprivileged user cannot read or write.
Run as root, a command gives each file it creates the owner of the existing file it replaces,
else of the folder it is created in (the service user's folder), and the folders it makes the
same. When the folder is root's but the service is known to run as another user (the owner of
`storage_path`), it cannot tell which to pick and refuses with the `chown` command to run.
Not run as root, files are the caller's, as usual; `portside serve` checks it can use them.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from portside.auth.keys import load_or_create_signing_key
from portside.config.settings import Settings


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{user_name(self.uid)}:{group_name(self.gid)}"


class OwnerUnclear(Exception):
    """Who should own a new file cannot be told; the message says what to run."""


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _existing(path: Path) -> Path:
    """path, else its nearest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _owner_of(path: Path) -> Owner:
    st = path.stat()
    return Owner(st.st_uid, st.st_gid)


def service_owner(settings: Settings) -> Owner | None:
    """The service's user and group, as far as the settings tell: the owner of a local
    storage_path that exists and is not root's."""
    if settings.storage != "local" or not settings.storage_path.is_dir():
        return None
    owner = _owner_of(settings.storage_path)
    return owner if owner.uid != 0 else None


def owner_for(path: Path, *, service: Owner | None = None, euid: int | None = None) -> Owner | None:
    """Whom `path` should belong to when this process creates or replaces it; None when no
    chown is needed (not run as root, or root's is right). Raises OwnerUnclear."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    path = Path(os.path.abspath(path))
    if path.exists():
        owner = _owner_of(path)  # the file replaced keeps its owner
        return owner if owner.uid != 0 else None
    folder = _existing(path.parent)
    owner = _owner_of(folder)
    if owner.uid != 0:
        return owner
    if service is not None and service.uid != 0:
        command = f"touch {shlex.quote(str(path))} && chown {service} {shlex.quote(str(path))}"
        raise OwnerUnclear(
            f"{path} would be root's, as its folder {folder} is, but the service runs as "
            f"{user_name(service.uid)} (the owner of its storage_path): make the file theirs "
            f"first with `{command}`, then run this again"
        )
    return None  # a root-owned folder of a service that runs as root


def make_folders(folder: Path, owner: Owner | None, mode: int = 0o755) -> None:
    """mkdir -p folder, the folders made given to owner."""
    missing: list[Path] = []
    probe = Path(os.path.abspath(folder))
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):
            made.mkdir(mode=mode)
            if owner is not None:
                os.chown(made, owner.uid, owner.gid)


def create_owned(path: Path, owner: Owner | None, mode: int = 0o600) -> bool:
    """Create `path` empty with `mode`, given to owner, unless it exists; True if created."""
    make_folders(path.parent, owner)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    try:
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
    finally:
        os.close(fd)
    return True


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def chown_if(path: Path, owner: Owner | None) -> None:
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)


def prepare_database(settings: Settings, *, euid: int | None = None) -> None:
    """Run as root before migrations or a collection: a SQLite database and its writer lock are
    created owned as the service needs them (SQLite gives its -wal and -shm files the owner of
    the database itself when it runs as root)."""
    database = sqlite_file(settings.metadata_url)
    if database is None:
        return
    owner = owner_for(database, service=service_owner(settings), euid=euid)
    if owner is None:
        return
    lock = database.with_name(database.name + "-writer.lock")
    for path in (database, lock):
        create_owned(path, owner, 0o644 if path == database else 0o600)


def prepare_auth_files(settings: Settings, *, euid: int | None = None) -> None:
    """Run as root before the workers start: the token service's folder and signing key made
    owned as the service needs them (a worker running as root would make them root's)."""
    if settings.auth is None or settings.auth.token is None:
        return
    service = service_owner(settings)
    key_path = settings.token_key_path
    make_folders(key_path.parent, owner_for(key_path.parent, service=service, euid=euid), 0o700)
    owner = owner_for(key_path, service=service, euid=euid)
    if owner is not None and not key_path.exists():
        load_or_create_signing_key(key_path, algorithm=settings.auth.token.algorithm)
        chown_if(key_path, owner)
