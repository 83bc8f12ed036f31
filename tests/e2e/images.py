"""OCI image layouts built on disk with Python, for the e2e tests: no Docker engine, no network.

Every layer is a tar of random bytes, so that each test's blobs are new to the registry. Layers are
uncompressed tars (`...layer.v1.tar`) unless `gzip=True`; configs say which layers they hold
(`rootfs.diff_ids`), so podman accepts the images when it loads them into its storage.

A layout is what `skopeo copy oci:DIR:TAG ...` and `podman pull oci:DIR:TAG` read:

    DIR/oci-layout                    {"imageLayoutVersion": "1.0.0"}
    DIR/index.json                    an index naming each tag (org.opencontainers.image.ref.name)
    DIR/blobs/sha256/<hex>            every blob, manifests and configs included
"""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import json
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME: Final = "org.opencontainers.image.ref.name"

MiB: Final = 1024 * 1024
CHUNK: Final = 4 * MiB


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            value["platform"] = self.platform
        return value


@dataclass
class Image:
    """One image manifest in a layout, with what the tests compare against."""

    manifest: Descriptor
    config: Descriptor
    layers: list[Descriptor]

    @property
    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]


@dataclass
class Layout:
    """An OCI image layout folder; the tests read `tags` and `images` to know what to expect."""

    path: Path
    # tag → descriptor of the manifest or index it names
    tags: dict[str, Descriptor] = field(default_factory=dict)
    # manifest digest → image, for every image manifest written (index children included)
    images: dict[str, Image] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self._write_index()

    def ref(self, tag: str) -> str:
        """The containers-image transport reference of a tag, for skopeo and podman."""
        return f"oci:{self.path}:{tag}"

    def blob_path(self, digest: str) -> Path:
        algorithm, _, encoded = digest.partition(":")
        return self.path / "blobs" / algorithm / encoded

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def add_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.write_bytes(data)
        return Descriptor(media_type, digest, len(data))

    # Layers -------------------------------------------------------------------------------------

    def add_layer(
        self, size: int, *, gzip: bool = False, seed: int | None = None
    ) -> tuple[Descriptor, str]:
        """A tar layer holding one file of `size` random bytes (from os.urandom, or a seeded
        generator when seed is given). Returns the layer's descriptor and its diff_id (the
        digest of the uncompressed tar)."""
        temp = self.path / "blobs" / f".layer-{os.urandom(8).hex()}"
        with temp.open("wb") as file:
            blob = _HashingWriter(file)
            tar_hash = _HashingWriter(None)
            if gzip:
                compressor = gzip_module.GzipFile(fileobj=blob, mode="wb", compresslevel=1, mtime=0)
                sink: Any = _Tee(compressor, tar_hash)
            else:
                sink = _Tee(blob, tar_hash)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                cast(Any, tar).copybufsize = CHUNK  # 16 KiB by default: slow for 200 MiB
                info = tarfile.TarInfo(f"data/{os.urandom(6).hex()}.bin")
                info.size = size
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, cast(Any, _RandomReader(size, seed)))
            if gzip:
                compressor.close()
        digest = "sha256:" + blob.hasher.hexdigest()
        temp.rename(self.blob_path(digest))
        media_type = OCI_LAYER_GZIP if gzip else OCI_LAYER
        diff_id = "sha256:" + tar_hash.hasher.hexdigest()
        return Descriptor(media_type, digest, blob.size), diff_id

    # Images and indexes -------------------------------------------------------------------------

    def add_image(
        self,
        layer_sizes: list[int],
        *,
        tag: str | None = None,
        architecture: str = "amd64",
        gzip_first: bool = False,
        seed: int | None = None,
        labels: dict[str, str] | None = None,
    ) -> Image:
        """An image of one layer per size; tagged in index.json when tag is given; labels go
        into its config (`config.Labels`), as a Dockerfile's LABEL does."""
        layers: list[Descriptor] = []
        diff_ids: list[str] = []
        for position, size in enumerate(layer_sizes):
            layer_seed = None if seed is None else seed + position
            layer, diff_id = self.add_layer(
                size, gzip=gzip_first and position == 0, seed=layer_seed
            )
            layers.append(layer)
            diff_ids.append(diff_id)
        runtime: dict[str, Any] = {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/true"]}
        if labels is not None:
            runtime["Labels"] = labels
        config = self.add_blob(
            canonical_json(
                {
                    "architecture": architecture,
                    "os": "linux",
                    "created": "2024-01-01T00:00:00Z",
                    "config": runtime,
                    "rootfs": {"type": "layers", "diff_ids": diff_ids},
                    "history": [{"created_by": f"e2e layer {i}"} for i in range(len(layers))],
                }
            ),
            OCI_CONFIG,
        )
        manifest = self.add_blob(
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config.to_json(),
                    "layers": [layer.to_json() for layer in layers],
                }
            ),
            OCI_MANIFEST,
        )
        image = Image(manifest, config, layers)
        self.images[manifest.digest] = image
        if tag is not None:
            self.tag(tag, manifest)
        return image

    def add_based_image(self, tag: str, base: tuple[Descriptor, str], size: int) -> Image:
        """An image of two layers: base (a layer and its diff_id, already in this layout), which
        other images share, and one of `size` bytes of its own."""
        own, own_diff_id = self.add_layer(size + len(self.images))
        config = self.add_blob(
            canonical_json(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Cmd": ["/bin/true"]},
                    "rootfs": {"type": "layers", "diff_ids": [base[1], own_diff_id]},
                }
            ),
            OCI_CONFIG,
        )
        manifest = self.add_blob(
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": config.to_json(),
                    "layers": [base[0].to_json(), own.to_json()],
                }
            ),
            OCI_MANIFEST,
        )
        image = Image(manifest, config, [base[0], own])
        self.images[manifest.digest] = image
        self.tag(tag, manifest)
        return image

    def add_index(self, children: list[tuple[Image, dict[str, str]]], *, tag: str) -> Descriptor:
        """An index of image manifests, each with its platform, tagged in index.json."""
        manifests = [
            Descriptor(OCI_MANIFEST, image.manifest.digest, image.manifest.size, platform)
            for image, platform in children
        ]
        index = self.add_blob(
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [descriptor.to_json() for descriptor in manifests],
                }
            ),
            OCI_INDEX,
        )
        self.tag(tag, index)
        return index

    def tag(self, tag: str, descriptor: Descriptor) -> None:
        self.tags[tag] = descriptor
        self._write_index()

    def _write_index(self) -> None:
        entries = []
        for tag, descriptor in self.tags.items():
            entry = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size).to_json()
            entry["annotations"] = {REF_NAME: tag}
            entries.append(entry)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        (self.path / "index.json").write_text(json.dumps(index, indent=2))


# Reading a layout back (what skopeo wrote) ------------------------------------------------------


def read_index(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "index.json").read_text())
    return data


def tagged_digest(path: Path, tag: str | None = None) -> str:
    """The digest index.json of the layout at path names for tag (or its only entry)."""
    entries = read_index(path)["manifests"]
    if tag is not None:
        entries = [e for e in entries if e.get("annotations", {}).get(REF_NAME) == tag]
    assert len(entries) == 1, entries
    digest: str = entries[0]["digest"]
    return digest


def verify_layout_blobs(path: Path) -> dict[str, int]:
    """Check that every blob file in the layout hashes to its name; returns digest → size."""
    found: dict[str, int] = {}
    for blob in (path / "blobs" / "sha256").iterdir():
        if blob.name.startswith("."):
            continue
        digest = "sha256:" + file_sha256(blob)
        assert digest == f"sha256:{blob.name}", f"{blob} holds {digest}"
        found[digest] = blob.stat().st_size
    return found


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


# Stream helpers ---------------------------------------------------------------------------------


class _RandomReader:
    """`size` random bytes in chunks, from os.urandom or from a seeded generator."""

    def __init__(self, size: int, seed: int | None) -> None:
        self._left = size
        self._random = None if seed is None else random.Random(seed)

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        n = min(n, CHUNK)
        self._left -= n
        if self._random is not None:
            return bytes(self._random.randbytes(n))
        return os.urandom(n)


class _HashingWriter:
    """A write-only file that hashes and counts what passes, writing it on to `file` if any."""

    def __init__(self, file: BinaryIO | None) -> None:
        self._file = file
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
        return len(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()


class _Tee:
    """Writes to a (possibly compressing) sink and to a hasher of the uncompressed stream."""

    def __init__(self, sink: Any, uncompressed: _HashingWriter) -> None:
        self._sink = sink
        self._uncompressed = uncompressed

    def write(self, data: bytes) -> int:
        self._uncompressed.write(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        self._sink.flush()


def multi_layer_image(path: Path, tag: str = "v1", sizes: list[int] | None = None) -> Layout:
    """A layout with one image of several layers (first gzipped, the others plain tars)."""
    layout = Layout(path)
    layout.add_image(sizes or [64 * 1024, 300 * 1024, 1 * MiB, 5 * 1024], tag=tag, gzip_first=True)
    return layout


def multi_arch_index(path: Path, tag: str = "multi") -> Layout:
    """A layout with an index of an amd64 and an arm64 image, two layers each."""
    layout = Layout(path)
    amd64 = layout.add_image([128 * 1024, 16 * 1024], architecture="amd64")
    arm64 = layout.add_image([96 * 1024, 8 * 1024], architecture="arm64")
    layout.add_index(
        [
            (amd64, {"architecture": "amd64", "os": "linux"}),
            (arm64, {"architecture": "arm64", "os": "linux"}),
        ],
        tag=tag,
    )
    return layout


def big_layer_image(path: Path, size: int = 200 * MiB, tag: str = "big") -> Layout:
    """A layout with one image whose single layer holds `size` random bytes."""
    layout = Layout(path)
    layout.add_image([size], tag=tag, seed=int.from_bytes(os.urandom(4), "big"))
    return layout
