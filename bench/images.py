"""Image content for the benchmarks: random tar layers, OCI image manifests, OCI layout folders."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# Uncompressed layers: gzip would only measure the compressor, not the registry.
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", sha256_digest(self.data))

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    config: Blob
    layers: tuple[Blob, ...]
    manifest: Blob = field(init=False)

    def __post_init__(self) -> None:
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.config.descriptor(),
            "layers": [layer.descriptor() for layer in self.layers],
        }
        object.__setattr__(self, "manifest", Blob(json.dumps(manifest).encode(), OCI_MANIFEST))

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def size(self) -> int:
        """Bytes a client moves for this image: config, layers and manifest."""
        return sum(blob.size for blob in self.blobs) + self.manifest.size


def random_tar_layer(payload_size: int) -> Blob:
    """A tar holding one file of random bytes: valid for skopeo, and never deduplicated."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member = tarfile.TarInfo("payload.bin")
        member.size = payload_size
        tar.addfile(member, io.BytesIO(os.urandom(payload_size)))
    return Blob(buffer.getvalue(), OCI_LAYER_TAR)


def make_image(layer_payload_sizes: Sequence[int]) -> Image:
    layers = tuple(random_tar_layer(size) for size in layer_payload_sizes)
    # Layers are uncompressed tars, so each diff_id equals the layer digest.
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }
    return Image(Blob(json.dumps(config).encode(), OCI_CONFIG), layers)


def write_oci_layout(image: Image, directory: Path, tag: str) -> None:
    """Write `image` as an OCI image layout, the `oci:DIR:TAG` source skopeo reads."""
    blob_dir = directory / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    for blob in (*image.blobs, image.manifest):
        (blob_dir / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    descriptor = image.manifest.descriptor()
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
