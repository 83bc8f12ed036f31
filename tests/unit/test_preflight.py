"""What `portside serve` checks at start (server/preflight.py) and who owns the files commands
run as root make for the service (server/ownership.py). The checks take user and group ids, so
they are tested for `nobody` (65534) against files chowned to it or left root's, without
switching users; tests/e2e/test_e2e_preflight.py runs `portside serve` as nobody."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from portside.cli import main
from portside.config.settings import Settings
from portside.server.ownership import Owner, OwnerUnclear, owner_for, prepare_database
from portside.server.preflight import Ids, R, W, X, allowed, problems

NOBODY = 65534
NOBODY_IDS = Ids(NOBODY, frozenset({NOBODY}))
ROOT_IDS = Ids(0, frozenset({0}))
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder every user may reach (pytest's tmp_path is under a folder only root may)."""
    path = Path(tempfile.mkdtemp(prefix="portside-preflight-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def owned(path: Path, uid: int, mode: int, *, folder: bool = False) -> Path:
    if folder:
        path.mkdir()
    else:
        path.write_text("x")
    path.chmod(mode)
    os.chown(path, uid, uid)
    return path


@pytest.mark.parametrize(
    ("uid", "gid", "mode", "want", "ok"),
    [
        (NOBODY, NOBODY, 0o600, R | W, True),
        (0, 0, 0o600, R, False),
        (0, 0, 0o644, R, True),
        (0, 0, 0o644, W, False),
        (0, NOBODY, 0o640, R, True),  # by group
        (0, NOBODY, 0o640, W, False),
        (NOBODY, 0, 0o077, R, False),  # the owner's bits decide, not others'
    ],
)
def test_mode_bits_decide_for_other_users(
    base: Path, uid: int, gid: int, mode: int, want: int, ok: bool
) -> None:
    st = os.stat_result((0o100000 | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))
    assert allowed(st, NOBODY_IDS, want) is ok
    assert allowed(st, ROOT_IDS, want)
    assert allowed(st, ROOT_IDS, X) is bool(mode & 0o111)  # root runs what someone may run


@as_root
def test_a_storage_path_of_the_user_passes(base: Path) -> None:
    storage = owned(base / "registry", NOBODY, 0o750, folder=True)
    owned(storage / "registry.db", NOBODY, 0o644)
    owned(storage / "blobs", NOBODY, 0o755, folder=True)

    assert problems(Settings(storage_path=storage), NOBODY_IDS) == []


@as_root
def test_a_root_storage_path_is_refused_naming_path_and_user(base: Path) -> None:
    storage = owned(base / "registry", 0, 0o755, folder=True)

    (found,) = problems(Settings(storage_path=storage), NOBODY_IDS)

    assert str(found) == f"cannot write {storage} (permission denied for user nobody)"
    assert problems(Settings(storage_path=storage), ROOT_IDS) == []


@as_root
@pytest.mark.parametrize("name", ["registry.db", "registry.db-wal", "registry.db-writer.lock"])
def test_a_root_database_file_in_the_users_folder_is_refused(base: Path, name: str) -> None:
    storage = owned(base / "registry", NOBODY, 0o750, folder=True)
    owned(storage / name, 0, 0o644)

    found = problems(Settings(storage_path=storage), NOBODY_IDS)

    assert [str(problem) for problem in found] == [
        f"cannot write {storage / name} (permission denied for user nobody)"
    ]


@as_root
def test_a_root_folder_deep_under_storage_path_is_refused(base: Path) -> None:
    storage = owned(base / "registry", NOBODY, 0o750, folder=True)
    owned(storage / "blobs", NOBODY, 0o755, folder=True)
    owned(storage / "blobs" / "sha256", 0, 0o755, folder=True)

    (found,) = problems(Settings(storage_path=storage), NOBODY_IDS)
    assert found.path == storage / "blobs" / "sha256"


@as_root
def test_a_missing_storage_path_needs_a_writable_parent(base: Path) -> None:
    parent = owned(base / "srv", 0, 0o755, folder=True)
    (found,) = problems(Settings(storage_path=parent / "registry"), NOBODY_IDS)
    assert str(found) == (
        f"cannot create {parent / 'registry'} (permission denied for user nobody on {parent})"
    )
    os.chown(parent, NOBODY, NOBODY)
    assert problems(Settings(storage_path=parent / "registry"), NOBODY_IDS) == []


@as_root
def test_a_root_0600_htpasswd_file_is_refused(base: Path) -> None:
    storage = owned(base / "registry", NOBODY, 0o750, folder=True)
    htpasswd = owned(base / "htpasswd", 0, 0o600)
    settings = Settings(storage_path=storage, auth={"htpasswd": {"path": htpasswd}})

    (found,) = problems(settings, NOBODY_IDS)

    assert str(found) == f"cannot read {htpasswd} (permission denied for user nobody)"
    os.chown(htpasswd, NOBODY, NOBODY)
    assert problems(settings, NOBODY_IDS) == []


@as_root
def test_the_token_key_must_be_readable_and_its_folder_writable(base: Path) -> None:
    storage = owned(base / "registry", NOBODY, 0o750, folder=True)
    auth_section = {"htpasswd": {"path": base / "htpasswd"}, "token": {"service": "registry.test"}}
    settings = Settings(storage_path=storage, auth=auth_section)
    assert problems(settings, NOBODY_IDS) == []  # the key is made in storage_path/auth

    auth = owned(storage / "auth", 0, 0o700, folder=True)  # left by a server run as root
    first = problems(settings, NOBODY_IDS)[0]  # serve shows the first
    assert str(first) == f"cannot write {auth} (permission denied for user nobody)"


# ownership of what commands run as root create --------------------------------------------------


@as_root
def test_new_files_take_the_owner_of_their_folder_or_of_the_file_replaced(base: Path) -> None:
    folder = owned(base / "svc", NOBODY, 0o750, folder=True)
    assert owner_for(folder / "new", euid=0) == Owner(NOBODY, NOBODY)
    assert owner_for(folder / "a" / "b", euid=0) == Owner(NOBODY, NOBODY)
    assert owner_for(folder / "new", euid=1000) is None  # not root: the caller's, as usual
    existing = owned(base / "file", NOBODY, 0o600)
    assert owner_for(existing, euid=0) == Owner(NOBODY, NOBODY)
    # a root folder, and nothing says the service is someone else: root's, as for a root service
    assert owner_for(base / "new", euid=0) is None


@as_root
def test_a_root_folder_when_the_service_is_another_user_is_refused_with_the_command(
    base: Path,
) -> None:
    with pytest.raises(OwnerUnclear) as error:
        owner_for(base / "htpasswd", service=Owner(NOBODY, NOBODY), euid=0)
    assert f"touch {base / 'htpasswd'} && chown nobody:" in str(error.value)


@as_root
def test_gc_run_as_root_leaves_the_database_and_its_lock_to_the_service(base: Path) -> None:
    storage = owned(base / "registry", NOBODY, 0o750, folder=True)

    result = CliRunner().invoke(
        main, ["gc", "--flavor", "prod"], env={"STORAGE_PATH": str(storage)}
    )

    assert result.exit_code == 0, result.output
    for name in ("registry.db", "registry.db-writer.lock"):
        st = (storage / name).stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), name
    assert problems(Settings(storage_path=storage), NOBODY_IDS) == []


@as_root
def test_prepare_database_with_a_database_url_elsewhere(base: Path) -> None:
    folder = owned(base / "db", NOBODY, 0o750, folder=True)
    settings = Settings(
        storage_path=base / "registry", database_url=f"sqlite:///{folder / 'meta.db'}"
    )
    prepare_database(settings, euid=0)
    assert (folder / "meta.db").stat().st_uid == NOBODY
    assert (folder / "meta.db-writer.lock").stat().st_uid == NOBODY
