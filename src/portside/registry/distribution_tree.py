"""Reading a CNCF distribution registry's storage (its v2 layout) from a folder, as written by
distribution 2.x and 3.x with the filesystem driver (distribution's registry/storage/paths.go):

    <root>/docker/registry/v2/
        blobs/<algorithm>/<first two of encoded>/<encoded>/data    a blob's bytes
        repositories/<name>/                                       <name> may hold slashes
            _layers/<algorithm>/<encoded>/link                     a blob linked there
            _manifests/revisions/<algorithm>/<encoded>/link        a manifest of the repository
            _manifests/tags/<tag>/current/link                     the manifest a tag points at
            _manifests/tags/<tag>/index/...                        where the tag pointed before
            _uploads/                                              uploads in progress: ignored

Each link file holds a digest ("sha256:<encoded>"). Nothing here is written to.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from portside.registry.errors import DigestInvalid
from portside.registry.names import Digest

V2: Final = Path("docker/registry/v2")


class NotADistributionTree(Exception):
    """The folder holds no distribution v2 layout."""


@dataclass(frozen=True, slots=True)
class BadLink:
    """A link file that holds no digest, or not the one its path names."""

    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class RepositoryLinks:
    name: str
    layers: tuple[Digest, ...]
    revisions: tuple[Digest, ...]
    tags: dict[str, Digest]
    bad: tuple[BadLink, ...]


class DistributionTree:
    def __init__(self, root: Path) -> None:
        """root: the driver's rootdirectory (the folder holding `docker/`), or its v2 folder."""
        if (root / V2).is_dir():
            root = root / V2
        if not (root / "repositories").is_dir() and not (root / "blobs").is_dir():
            raise NotADistributionTree(
                f"{root} holds no distribution storage (no {V2}/repositories or blobs)"
            )
        self.v2 = root

    def blob_path(self, digest: Digest) -> Path:
        return self.v2 / "blobs" / digest.algorithm / digest.encoded[:2] / digest.encoded / "data"

    def repositories(self) -> list[str]:
        """The names of every repository, sorted: folders holding _manifests or _layers."""
        base = self.v2 / "repositories"
        found: list[str] = []
        for folder, subfolders, _ in os.walk(base):
            if "_manifests" in subfolders or "_layers" in subfolders:
                found.append(Path(folder).relative_to(base).as_posix())
            # A repository's own folders start with "_"; names may nest below it all the same.
            subfolders[:] = sorted(s for s in subfolders if not s.startswith("_"))
        return sorted(found)

    def links(self, name: str) -> RepositoryLinks:
        folder = self.v2 / "repositories" / name
        bad: list[BadLink] = []
        layers = list(self._digests(folder / "_layers", bad))
        revisions = list(self._digests(folder / "_manifests" / "revisions", bad))
        tags: dict[str, Digest] = {}
        tag_folder = folder / "_manifests" / "tags"
        for tag in sorted(os.listdir(tag_folder)) if tag_folder.is_dir() else []:
            link = tag_folder / tag / "current" / "link"
            if not link.is_file():
                continue  # a tag deleted through the API leaves its folder, or nothing at all
            digest = _read_link(link, bad)
            if digest is not None:
                tags[tag] = digest
        return RepositoryLinks(name, tuple(layers), tuple(revisions), tags, tuple(bad))

    def _digests(self, base: Path, bad: list[BadLink]) -> Iterator[Digest]:
        """The digests of base/<algorithm>/<encoded>/link files, checked against their path."""
        for algorithm in sorted(os.listdir(base)) if base.is_dir() else []:
            for encoded in sorted(os.listdir(base / algorithm)):
                link = base / algorithm / encoded / "link"
                if not link.is_file():
                    continue  # distribution removes a link file, not its folder, on delete
                digest = _read_link(link, bad)
                if digest is None:
                    continue
                if (digest.algorithm, digest.encoded) != (algorithm, encoded):
                    bad.append(BadLink(link, f"holds {digest}, which its path does not name"))
                    continue
                yield digest

    def blobs(self) -> Iterator[Digest]:
        """Every blob with bytes under blobs/."""
        base = self.v2 / "blobs"
        for algorithm in sorted(os.listdir(base)) if base.is_dir() else []:
            for fan_out in sorted(os.listdir(base / algorithm)):
                for encoded in sorted(os.listdir(base / algorithm / fan_out)):
                    try:
                        digest = Digest.parse(f"{algorithm}:{encoded}")
                    except DigestInvalid:
                        continue
                    if self.blob_path(digest).is_file():
                        yield digest


def _read_link(path: Path, bad: list[BadLink]) -> Digest | None:
    try:
        text = path.read_text(encoding="ascii").strip()
        return Digest.parse(text)
    except (UnicodeDecodeError, DigestInvalid):
        bad.append(BadLink(path, "holds no digest"))
        return None
