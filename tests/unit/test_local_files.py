"""Placing a local file under a blob store folder (registry/local_files.py), as imports and
backups do while the store's deletes prune folders left empty."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from portside.registry import local_files
from portside.registry.local_files import place
from portside.storage.base import NotFound


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "distribution" / "data"
    path.parent.mkdir()
    path.write_bytes(b"layer bytes")
    return path


def test_a_link_is_the_same_file_and_a_copy_another(source: Path, tmp_path: Path) -> None:
    linked, copied = tmp_path / "store" / "a", tmp_path / "store" / "b"

    assert place(source, linked, link=True) is False
    assert place(source, copied, link=False) is True

    assert linked.stat().st_ino == source.stat().st_ino
    assert copied.stat().st_ino != source.stat().st_ino
    assert copied.read_bytes() == b"layer bytes"


def test_where_no_link_can_be_made_the_bytes_are_copied(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(_source: Path, _target: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_files.os, "link", cross_device)

    assert place(source, tmp_path / "store" / "a", link=True) is True
    assert (tmp_path / "store" / "a").read_bytes() == b"layer bytes"


def test_a_folder_pruned_meanwhile_is_made_again(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "store" / "uploads" / "a"
    real_link = os.link
    pruned = []

    def prune_first(origin: Path, name: Path) -> None:
        if not pruned:  # another request's delete empties and removes the folder first
            pruned.append(name)
            Path(name).parent.rmdir()
        real_link(origin, name)

    monkeypatch.setattr(local_files.os, "link", prune_first)

    assert place(source, target, link=True) is False
    assert pruned == [target]
    assert target.read_bytes() == b"layer bytes"


def test_a_folder_pruned_while_it_is_made_is_made_again(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pathlib's mkdir(exist_ok=True) raises FileExistsError when the folder it found there is
    gone by the time it checks it is a folder: a CI run's import met this."""
    target = tmp_path / "store" / "uploads" / "a"
    real_mkdir = Path.mkdir
    raced = []

    def pruned_in_between(self: Path, *args: object, **kwargs: object) -> None:
        if not raced:
            raced.append(self)
            raise FileExistsError(errno.EEXIST, "File exists", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", pruned_in_between)

    assert place(source, target, link=True) is False
    assert raced == [target.parent]
    assert target.read_bytes() == b"layer bytes"


def test_a_missing_source_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        place(tmp_path / "absent", tmp_path / "store" / "a", link=True)
