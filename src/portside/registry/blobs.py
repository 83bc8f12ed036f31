"""Reading and deleting blobs in a repository. A repository reads a blob only once it is linked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from portside.metadata.base import RequestStore
from portside.registry import keys
from portside.registry.errors import BlobUnknown
from portside.registry.events import BLOB_MEDIA_TYPE, Action, Origin, Recorder, Target
from portside.registry.names import Digest
from portside.storage.base import BlobStore


@dataclass(frozen=True, slots=True)
class BlobContent:
    """How to send a blob: a local file for zero-copy sends, else a byte stream from the store."""

    digest: Digest
    size: int
    path: Path | None
    key: str


class Blobs:
    def __init__(
        self,
        storage: BlobStore,
        metadata: RequestStore,
        redirect_seconds: int | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        """redirect_seconds: hand clients URLs of the storage backend valid this long, where the
        driver can make them (`storage_redirect`); None: always send the bytes."""
        self._storage = storage
        self._metadata = metadata
        self._redirect_seconds = redirect_seconds
        self._recorder = recorder or Recorder()

    async def stat(self, name: str, digest: Digest) -> int:
        size = await self._metadata.linked_blob_size(name, str(digest))
        if size is None:
            raise BlobUnknown({"digest": str(digest)})
        return size

    async def open(self, name: str, digest: Digest) -> BlobContent:
        size = await self.stat(name, digest)
        key = keys.blob(digest)
        return BlobContent(digest, size, self._storage.local_path(key), key)

    def redirect_url(self, content: BlobContent) -> str | None:
        """A short-lived URL where the client may GET the blob (ranges too) from the storage
        backend itself; None when redirects are off or the driver makes no such URLs."""
        if self._redirect_seconds is None:
            return None
        return self._storage.redirect_url(content.key, self._redirect_seconds)

    def read(self, content: BlobContent, offset: int, length: int) -> AsyncIterator[bytes]:
        return self._storage.read(content.key, offset, length)

    def pulled(self, name: str, content: BlobContent, origin: Origin) -> None:
        """Tell the endpoints that want pulls that the blob was sent (or redirected to)."""
        digest = str(content.digest)
        target = self._recorder.target(
            (name, digest),
            lambda: Target(name, digest, BLOB_MEDIA_TYPE, content.size, blob=True),
        )
        self._recorder.pulled(target, origin)

    async def delete(self, name: str, digest: Digest, origin: Origin | None = None) -> None:
        """Unlink the blob from the repository; its bytes go when garbage collection finds them
        unreferenced."""
        target = Target(name, str(digest), blob=True)
        journal = self._recorder.journal(Action.DELETE, target, origin, {"target": "blob"})
        if not await self._metadata.unlink_blob(name, str(digest), journal):
            raise BlobUnknown({"digest": str(digest)})
