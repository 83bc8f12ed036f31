"""`portside serve` refuses to start, in one line naming the path and the user and with exit
status 1, when it cannot use what it needs: run as `nobody` (setpriv, util-linux) against a
storage_path or an htpasswd file that is root's, a storage_path under a folder that cannot be
written, a database_url that cannot be opened. No traceback, no worker crash-loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .server import PORTSIDE

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
needs_setpriv = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder nobody may reach (pytest's tmp_path is under a folder only its owner may)."""
    path = Path(tempfile.mkdtemp(prefix="portside-preflight-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def serve(
    *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> tuple[int, list[str]]:
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable at {PORTSIDE}")
    environment = {"PATH": os.environ["PATH"], "PORTSIDE_LISTEN": "127.0.0.1:1", **(env or {})}
    result = subprocess.run(
        [*(prefix or []), str(PORTSIDE), "serve", "--flavor", "prod", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if "WARNING" not in line]
    return result.returncode, lines


@needs_setpriv
def test_a_root_0600_htpasswd_file_is_refused_in_one_line(base: Path) -> None:
    storage = base / "registry"
    storage.mkdir()
    os.chown(storage, NOBODY, NOBODY)
    htpasswd = base / "htpasswd"
    htpasswd.write_text("alice:$2y$04$abcdefghijklmnopqrstuu5Yc0tqBqEHW/ey6I0XrZOmFm1E.aANm\n")
    htpasswd.chmod(0o600)  # root's, as `sudo portside user add` used to leave it
    config = base / "config.yml"
    section = {"storage_path": str(storage), "auth": {"htpasswd": {"path": str(htpasswd)}}}
    config.write_text(yaml.safe_dump({"prod": section}))

    code, lines = serve("--config", str(config), prefix=AS_NOBODY)

    assert code == 1
    assert lines == [f"portside: cannot read {htpasswd} (permission denied for user nobody)"]


@needs_setpriv
def test_a_storage_path_the_user_cannot_write_is_refused_in_one_line(base: Path) -> None:
    storage = base / "registry"
    storage.mkdir()  # root's 0755

    code, lines = serve(env={"STORAGE_PATH": str(storage)}, prefix=AS_NOBODY)

    assert code == 1
    assert lines == [f"portside: cannot write {storage} (permission denied for user nobody)"]
    code, lines = serve(env={"STORAGE_PATH": str(storage / "a" / "b")}, prefix=AS_NOBODY)
    assert code == 1
    assert lines == [
        f"portside: cannot create {storage / 'a' / 'b'} "
        f"(permission denied for user nobody on {storage})"
    ]


@needs_setpriv
def test_a_root_database_left_by_a_command_run_as_root_is_refused(base: Path) -> None:
    storage = base / "registry"
    storage.mkdir()
    os.chown(storage, NOBODY, NOBODY)
    (storage / "registry.db").touch()  # root's 0644

    code, lines = serve(env={"STORAGE_PATH": str(storage)}, prefix=AS_NOBODY)

    assert code == 1
    assert lines == [
        f"portside: cannot write {storage / 'registry.db'} (permission denied for user nobody)"
    ]


def test_a_storage_path_whose_parent_cannot_be_made_is_refused_in_one_line() -> None:
    code, lines = serve(env={"STORAGE_PATH": "/proc/portside-nowhere/registry"})
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("portside: cannot create /proc/portside-nowhere")
    assert "user" in lines[0]


def test_a_database_url_that_cannot_be_opened_is_refused_in_one_line(base: Path) -> None:
    storage = str(base / "registry")
    code, lines = serve(
        env={"STORAGE_PATH": storage, "PORTSIDE_DATABASE_URL": "sqlite:////nonexistent/x.db"}
    )
    assert code == 1
    assert lines == [
        "portside: cannot open database /nonexistent/x.db (its folder /nonexistent does not exist)"
    ]
    url = "postgresql+psycopg://portside:secret@127.0.0.1:1/registry"
    code, lines = serve(env={"STORAGE_PATH": storage, "PORTSIDE_DATABASE_URL": url})
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(
        "portside: cannot open database_url postgresql+psycopg://portside:***@127.0.0.1:1/registry"
    )
    assert "secret" not in lines[0]
