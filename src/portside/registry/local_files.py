"""Putting a local file's bytes under a local blob store path: hard-linked where possible, else
copied by the kernel and fsynced. For imports and backups, where both ends are folders."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Final

from portside.storage.base import NotFound
from portside.storage.filesystem import FOLDER_RETRIES, make_parent

# Errors of os.link that a copy gets around: another filesystem, a link refused by
# fs.protected_hardlinks (a file of another user), too many links.
NO_LINK: Final = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK})


def place(source: Path, target: Path, link: bool) -> bool:
    """Make target hold source's bytes, a new name of the same file if link and the filesystem
    lets it, else a durable copy; whether it was copied. NotFound if source is not there."""
    for _ in range(FOLDER_RETRIES):
        make_parent(target)  # the filesystem store prunes folders a delete leaves empty
        try:
            return _place(source, target, link)
        except FileNotFoundError:
            if not source.is_file():
                raise NotFound(str(source)) from None
            # target's folder was pruned between mkdir and the link or copy: again
    raise NotFound(f"{target.parent} keeps vanishing")


def _place(source: Path, target: Path, link: bool) -> bool:
    if link:
        try:
            os.link(source, target)
            return False
        except OSError as error:
            if error.errno not in NO_LINK:
                raise
    shutil.copyfile(source, target)
    with target.open("rb") as file:
        os.fsync(file.fileno())
    return True
