"""Writing a CNCF distribution v2 storage tree by hand, file for file as distribution's filesystem
driver lays it out (registry/storage/paths.go), for the import tests that need no real
distribution. A library, so no test_ prefix."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST, random_bytes


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    digest: str
    body: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)  # config and layers


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.v2 = root / "docker" / "registry" / "v2"

    def data(self, digest: str) -> Path:
        encoded = digest.split(":")[1]
        return self.v2 / "blobs" / "sha256" / encoded[:2] / encoded / "data"

    def write_blob(self, data: bytes) -> str:
        digest = sha256(data)
        self.data(digest).parent.mkdir(parents=True, exist_ok=True)
        self.data(digest).write_bytes(data)
        return digest

    def link(self, name: str, *parts: str, digest: str) -> None:
        path = self.v2 / "repositories" / name / Path(*parts) / "link"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest)

    def push_blob(self, name: str, data: bytes) -> str:
        digest = self.write_blob(data)
        self.link(name, "_layers", "sha256", digest.split(":")[1], digest=digest)
        return digest

    def push_manifest(self, name: str, document: dict[str, Any], tag: str | None) -> str:
        body = json.dumps(document, indent=3).encode()
        digest = self.write_blob(body)
        self.link(name, "_manifests", "revisions", "sha256", digest.split(":")[1], digest=digest)
        if tag is not None:
            self.tag(name, tag, digest)
        return digest

    def tag(self, name: str, tag: str, digest: str) -> None:
        self.link(name, "_manifests", "tags", tag, "current", digest=digest)
        self.link(name, "_manifests", "tags", tag, "index", "sha256", digest[7:], digest=digest)

    def push_image(self, name: str, tag: str | None, layers: list[bytes] | None = None) -> Image:
        config = json.dumps({"architecture": "amd64", "nonce": random_bytes(8).hex()}).encode()
        blobs = {self.push_blob(name, config): config}
        for layer in layers if layers is not None else [random_bytes(300)]:
            blobs[self.push_blob(name, layer)] = layer
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [
                {"mediaType": DOCKER_LAYER, "digest": sha256(data), "size": len(data)}
                for data in blobs.values()
                if data is not config
            ],
        }
        digest = self.push_manifest(name, document, tag)
        return Image(digest, self.data(digest).read_bytes(), blobs)

    def push_list(self, name: str, tag: str, children: list[Image]) -> Image:
        document = {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {
                    "mediaType": DOCKER_MANIFEST,
                    "digest": child.digest,
                    "size": len(child.body),
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for child, arch in zip(children, ["amd64", "arm64", "s390x"], strict=False)
            ],
        }
        digest = self.push_manifest(name, document, tag)
        return Image(digest, self.data(digest).read_bytes())
