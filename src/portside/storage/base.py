"""The blob store interface: bytes under opaque keys. Drivers know nothing of digests or
repositories.

Every driver passes the one suite in tests/contract/blob_store.py.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

# Keys are relative slash-separated paths of lowercase segments; no segment starts with a dot, so
# neither `..` nor hidden temp files can be named from outside.
_SEGMENT: Final = r"[a-z0-9][a-z0-9_+=-]*(?:\.[a-z0-9_+=-]+)*"
KEY_PATTERN: Final = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


class StorageError(Exception):
    """Base of the errors a driver raises."""


class NotFound(StorageError):
    """No object under the key."""


class InvalidKey(StorageError):
    """A key outside KEY_PATTERN: a bug above the driver, never a client's input."""


def check_key(key: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidKey(key)
    return key


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # when the object was last written, time-zone aware


class Writer(Protocol):
    """Appends to one object. Bytes written are visible to readers of the key only as far as the
    driver has them; a blob becomes visible to clients only after `BlobStore.move` to its final
    key."""

    @property
    def size(self) -> int:
        """Bytes in the object so far, including those before the writer was opened."""

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> None:
        """Make everything written durable, the object's name included, then close."""

    async def close(self) -> None:
        """Close, keeping what was written (it may not be durable)."""

    async def cancel(self) -> None:
        """Close and delete the object."""


class BlobStore(Protocol):
    """Bytes under keys matching KEY_PATTERN."""

    async def stat(self, key: str) -> int:
        """The object's size in bytes; NotFound if there is none."""

    def read(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The object's bytes from offset, at most length of them; NotFound if there is none,
        ValueError if offset is negative. Nothing past the end."""

    async def get(self, key: str) -> bytes:
        """The whole object, for small ones (manifests); NotFound if there is none."""

    async def put(self, key: str, data: bytes) -> None:
        """Store data under key durably; the key shows the old object or the new, never a part."""

    async def writer(self, key: str, offset: int = 0) -> Writer:
        """A writer appending at offset: 0 starts a new object (replacing any), a positive offset
        continues an existing one, dropping anything past offset. NotFound if offset > 0 and there
        is no object, or the object is shorter than offset; ValueError if offset is negative."""

    async def move(self, src: str, dst: str) -> None:
        """Rename src to dst durably; dst appears whole or not at all, replacing any object
        there. NotFound if src has no object."""

    async def delete(self, key: str) -> None:
        """Delete the object under key, or every object under it if key is a prefix. No error if
        nothing is there."""

    def list(self, prefix: str) -> AsyncIterator[str]:
        """Every key under prefix, in no particular order."""

    def scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object under prefix, as list finds them, with its size and when it was last
        written (a move keeps that time)."""

    def local_path(self, key: str) -> Path | None:
        """A local file holding the object, for zero-copy sends; None when the driver has none."""

    def redirect_url(self, key: str, expires: int) -> str | None:
        """A URL that GETs the finished object under key, Range requests included, without
        credentials for expires seconds, so that clients can fetch the bytes from the backend
        itself; None when the driver has none. Made locally: it does not check that the object
        exists."""
