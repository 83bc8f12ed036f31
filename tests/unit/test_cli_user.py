"""`portside user add|passwd|remove|list`: the htpasswd file managed without apache2-utils, the
password read from a prompt or stdin, never from the arguments."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from portside.auth.htpasswd import HtpasswdFile
from portside.cli import main


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "htpasswd"


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["user", *args], input=input)
    return result.exit_code, result.output


def test_add_with_the_password_on_stdin_writes_bcrypt_with_mode_0600(path: Path) -> None:
    code, output = run("add", "alice", "--htpasswd", str(path), "--password-stdin", input="pw-1\n")

    assert code == 0, output
    assert "added user alice" in output
    assert path.read_text().startswith("alice:$2y$12$")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert HtpasswdFile(path).verify("alice", "pw-1")
    assert "pw-1" not in output


def test_add_prompts_twice_for_the_password(path: Path) -> None:
    code, output = run("add", "bob", "--htpasswd", str(path), "--rounds", "4", input="pw-2\npw-2\n")

    assert code == 0, output
    assert output.count("Password") == 1
    assert "Repeat for confirmation" in output
    assert HtpasswdFile(path).verify("bob", "pw-2")


def test_a_mistyped_confirmation_is_asked_again(path: Path) -> None:
    code, output = run(
        "add", "bob", "--htpasswd", str(path), "--rounds", "4", input="pw-2\npw-3\npw-2\npw-2\n"
    )
    assert code == 0, output
    assert HtpasswdFile(path).verify("bob", "pw-2")


@pytest.mark.parametrize(
    ("scheme", "prefix"),
    [("md5", "$apr1$"), ("sha1", "{SHA}"), ("sha512", "$6$"), ("sha256", "$5$")],
)
def test_other_schemes(path: Path, scheme: str, prefix: str) -> None:
    code, output = run(
        "add", "u", "--htpasswd", str(path), "--scheme", scheme, "--password-stdin", input="pw\n"
    )
    assert code == 0, output
    assert path.read_text().startswith(f"u:{prefix}")
    assert HtpasswdFile(path).verify("u", "pw")


def test_there_is_no_password_argument(path: Path) -> None:
    code, output = run("add", "alice", "secret", "--htpasswd", str(path), input="x\n")
    assert code != 0
    assert not path.exists()
    code, output = run("add", "alice", "--password", "secret", "--htpasswd", str(path))
    assert code != 0
    assert "No such option" in output


def test_add_refuses_an_existing_user_unless_replacing(path: Path) -> None:
    args = ["add", "alice", "--htpasswd", str(path), "--rounds", "4", "--password-stdin"]
    assert run(*args, input="one\n")[0] == 0

    code, output = run(*args, input="two\n")
    assert code == 1
    assert "exists" in output
    assert run(*args, "--replace", input="two\n")[0] == 0
    assert HtpasswdFile(path).verify("alice", "two")


@pytest.mark.parametrize("username", ["a:b", "#x", "with space", ""])
def test_bad_usernames_are_refused(path: Path, username: str) -> None:
    code, output = run("add", username, "--htpasswd", str(path), "--password-stdin", input="pw\n")
    assert code == 1
    assert "Error" in output


def test_an_empty_password_is_refused(path: Path) -> None:
    code, output = run("add", "alice", "--htpasswd", str(path), "--password-stdin", input="\n")
    assert code == 1
    assert "empty password" in output


def test_passwd_list_remove(path: Path) -> None:
    for name in ("alice", "bob"):
        run("add", name, "--htpasswd", str(path), "--rounds", "4", "--password-stdin", input="a\n")

    code, output = run("passwd", "bob", "--htpasswd", str(path), "--password-stdin", input="b\n")
    assert code == 0, output
    assert HtpasswdFile(path).verify("bob", "b")
    assert run("list", "--htpasswd", str(path)) == (0, "alice\nbob\n")

    assert run("remove", "alice", "--htpasswd", str(path))[0] == 0
    assert run("list", "--htpasswd", str(path)) == (0, "bob\n")
    code, output = run("remove", "alice", "--htpasswd", str(path))
    assert code == 1
    assert "no user 'alice'" in output
    code, output = run("passwd", "carol", "--htpasswd", str(path), "--password-stdin", input="c\n")
    assert code == 1
    assert "no user 'carol'" in output


def test_the_file_comes_from_the_config(tmp_path: Path, path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"prod": {"auth": {"htpasswd": {"path": str(path)}}}}))

    code, output = run(
        "add", "alice", "--config", str(config), "--flavor", "prod", "--password-stdin", input="p\n"
    )

    assert code == 0, output
    assert run("list", "--config", str(config), "--flavor", "prod") == (0, "alice\n")


def test_without_a_file_or_a_config_that_names_one_it_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("dev:\n    issue: x\n")
    code, output = run("list", "--config", str(config))
    assert code == 1
    assert "give --htpasswd FILE, or a config with auth.htpasswd.path" in output


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_run_as_root_a_new_file_takes_the_owner_of_its_folder(tmp_path: Path) -> None:
    # `sudo portside user add` for the service user's folder: the file (and its lock) must stay
    # readable by that user, not become root's 0600.
    folder = tmp_path / "svc"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    path = folder / "htpasswd"
    password = ["--rounds", "4", "--password-stdin"]
    for args in (
        ["add", "alice", *password],
        ["add", "bob", *password],
        ["passwd", "bob", *password],
        ["remove", "alice"],
    ):
        code, output = run(*args, "--htpasswd", str(path), input="pw\n")
        assert code == 0, output
        for made in (path, folder / "htpasswd.lock"):
            st = made.stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)
    assert HtpasswdFile(path).verify("bob", "pw")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_run_as_root_a_root_folder_of_a_service_user_is_refused_with_the_chown(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "registry"
    storage.mkdir()
    os.chown(storage, 65534, 65534)
    path = tmp_path / "etc" / "htpasswd"
    path.parent.mkdir()
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {"prod": {"storage_path": str(storage), "auth": {"htpasswd": {"path": str(path)}}}}
        )
    )
    args = ["add", "alice", "--config", str(config), "--flavor", "prod", "--password-stdin"]

    code, output = run(*args, input="pw\n")

    assert code == 1
    assert f"touch {path} && chown nobody:" in output
    assert not path.exists()
    path.touch()
    os.chown(path, 65534, 65534)
    assert run(*args, input="pw\n")[0] == 0
    assert path.stat().st_uid == 65534
