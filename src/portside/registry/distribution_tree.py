"""Reading a CNCF distribution registry's storage (its v2 layout), as written by distribution 2.x
and 3.x with the filesystem or the S3 driver (distribution's registry/storage/paths.go):

    <root>/docker/registry/v2/
        blobs/<algorithm>/<first two of encoded>/<encoded>/data    a blob's bytes
        repositories/<name>/                                       <name> may hold slashes
            _layers/<algorithm>/<encoded>/link                     a blob linked there
            _manifests/revisions/<algorithm>/<encoded>/link        a manifest of the repository
            _manifests/tags/<tag>/current/link                     the manifest a tag points at
            _manifests/tags/<tag>/index/...                        where the tag pointed before
            _uploads/                                              uploads in progress: ignored

Each link file holds a digest ("sha256:<encoded>"). The tree is read through a TreeSource (a
folder here, a bucket in distribution_bucket.py), by paths relative to the v2 folder. Nothing
in it is written to.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from anyio import to_thread

from portside.registry.errors import DigestInvalid
from portside.registry.ingest import hash_file
from portside.registry.local_files import place
from portside.registry.names import Digest
from portside.storage.base import BlobStore, NotFound

V2: Final = "docker/registry/v2"
# Bytes read at a time from a blob streamed out of a tree.
CHUNK: Final = 4 * 1024 * 1024


class NotADistributionTree(Exception):
    """The folder or bucket holds no distribution v2 layout."""


class Placement(StrEnum):
    """How a blob's bytes reached Portside's store."""

    LINKED = "hard-linked"
    COPIED = "copied"  # by the kernel, from file to file
    SERVER_SIDE = "copied server-side"
    STREAMED = "streamed"  # read and written by this process


class TreeSource(Protocol):
    """A distribution tree's files, by slash-separated paths relative to its v2 folder."""

    def where(self, path: str) -> str:
        """Where the file is, for messages: a full path or URL."""

    def folders(self, path: str) -> list[str]:
        """The names of the folders in the folder at path, sorted; none if it is no folder."""

    def size(self, path: str) -> int | None:
        """The size of the file at path; None if there is none."""

    def read(self, path: str) -> bytes:
        """A small file's bytes; NotFound if there is none."""

    def open(self, path: str) -> AsyncIterator[bytes]:
        """A file's bytes, a chunk at a time; NotFound if there is none."""

    async def digest(self, path: str, algorithm: str) -> str:
        """The hex digest of the file's bytes; NotFound if there is none."""

    async def place(self, path: str, storage: BlobStore, key: str) -> Placement | None:
        """Put the file's bytes under key in storage without them passing through this process
        (a hard link, a kernel copy, a server-side copy), unchecked; None when storage allows
        none of these. NotFound if there is no file."""

    def copies_as_read(self, storage: BlobStore) -> bool:
        """Whether place() into storage puts there the very bytes that open() and digest()
        read, whatever happens to the file between the two (an object pinned by the version
        listed): then a blob checked at the source may be placed at its key directly."""


class FolderSource:
    """A tree in a local folder: distribution's filesystem driver."""

    def __init__(self, root: Path) -> None:
        """root: the driver's rootdirectory (the folder holding `docker/`), or its v2 folder."""
        self.v2 = root / V2 if (root / V2).is_dir() else root

    def path(self, path: str) -> Path:
        return self.v2 / path

    def where(self, path: str) -> str:
        return str(self.v2 / path)

    def folders(self, path: str) -> list[str]:
        try:
            with os.scandir(self.v2 / path) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def size(self, path: str) -> int | None:
        try:
            return (self.v2 / path).stat().st_size if (self.v2 / path).is_file() else None
        except FileNotFoundError:
            return None

    def read(self, path: str) -> bytes:
        try:
            return (self.v2 / path).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(self.where(path)) from None

    async def open(self, path: str) -> AsyncIterator[bytes]:
        try:
            file = (self.v2 / path).open("rb")
        except FileNotFoundError:
            raise NotFound(self.where(path)) from None
        with file:
            while chunk := await to_thread.run_sync(file.read, CHUNK):
                yield chunk

    async def digest(self, path: str, algorithm: str) -> str:
        return await to_thread.run_sync(hash_file, self.v2 / path, algorithm)

    async def place(self, path: str, storage: BlobStore, key: str) -> Placement | None:
        local = storage.local_path(key)
        if local is None:
            return None
        copied = await to_thread.run_sync(place, self.v2 / path, local, True)
        return Placement.COPIED if copied else Placement.LINKED

    def copies_as_read(self, storage: BlobStore) -> bool:
        return False  # a file may be rewritten between its reading and its link or copy


@dataclass(frozen=True, slots=True)
class BadLink:
    """A link file that holds no digest, or not the one its path names."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class RepositoryLinks:
    name: str
    layers: tuple[Digest, ...]
    revisions: tuple[Digest, ...]
    tags: dict[str, Digest]
    bad: tuple[BadLink, ...]


class DistributionTree:
    def __init__(self, source: TreeSource) -> None:
        if not {"repositories", "blobs"} & set(source.folders("")):
            raise NotADistributionTree(
                f"{source.where('')} holds no distribution storage (no {V2}/repositories or blobs)"
            )
        self.source = source

    @staticmethod
    def blob_path(digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}/data"

    def repositories(self) -> list[str]:
        """The names of every repository, sorted: folders holding _manifests or _layers."""
        found: list[str] = []
        pending = [""]
        while pending:
            name = pending.pop()
            subfolders = self.source.folders(f"repositories/{name}".rstrip("/"))
            if "_manifests" in subfolders or "_layers" in subfolders:
                found.append(name)
            # A repository's own folders start with "_"; names may nest below it all the same.
            pending.extend(f"{name}/{s}".lstrip("/") for s in subfolders if not s.startswith("_"))
        return sorted(found)

    def links(self, name: str) -> RepositoryLinks:
        folder = f"repositories/{name}"
        bad: list[BadLink] = []
        layers = list(self._digests(f"{folder}/_layers", bad))
        revisions = list(self._digests(f"{folder}/_manifests/revisions", bad))
        tags: dict[str, Digest] = {}
        for tag in self.source.folders(f"{folder}/_manifests/tags"):
            # A tag deleted through the API leaves its folder, or nothing at all.
            digest = self._read_link(f"{folder}/_manifests/tags/{tag}/current/link", bad)
            if digest is not None:
                tags[tag] = digest
        return RepositoryLinks(name, tuple(layers), tuple(revisions), tags, tuple(bad))

    def _digests(self, base: str, bad: list[BadLink]) -> Iterator[Digest]:
        """The digests of base/<algorithm>/<encoded>/link files, checked against their path."""
        for algorithm in self.source.folders(base):
            for encoded in self.source.folders(f"{base}/{algorithm}"):
                link = f"{base}/{algorithm}/{encoded}/link"
                # distribution removes a link file, not its folder, on delete
                digest = self._read_link(link, bad)
                if digest is None:
                    continue
                if (digest.algorithm, digest.encoded) != (algorithm, encoded):
                    where = self.source.where(link)
                    bad.append(BadLink(where, f"holds {digest}, which its path does not name"))
                    continue
                yield digest

    def _read_link(self, path: str, bad: list[BadLink]) -> Digest | None:
        """The digest in a link file; None if there is no file, or (reported) no digest."""
        try:
            return Digest.parse(self.source.read(path).decode("ascii").strip())
        except NotFound:
            return None
        except (UnicodeDecodeError, DigestInvalid):
            bad.append(BadLink(self.source.where(path), "holds no digest"))
            return None

    def blobs(self) -> Iterator[Digest]:
        """Every blob with bytes under blobs/."""
        for algorithm in self.source.folders("blobs"):
            for fan_out in self.source.folders(f"blobs/{algorithm}"):
                for encoded in self.source.folders(f"blobs/{algorithm}/{fan_out}"):
                    try:
                        digest = Digest.parse(f"{algorithm}:{encoded}")
                    except DigestInvalid:
                        continue
                    if self.source.size(self.blob_path(digest)) is not None:
                        yield digest
