"""Moving in and staying safe, timed: `portside import distribution` of a distribution tree on the
same filesystem (images and GB per second), then `portside backup` of the result (full, then
again with nothing new), `portside verify`, and `portside restore` into a fresh folder.

The tree is written as distribution's filesystem driver lays it out (random layers, every image
sharing one base layer), straight to disk: pushing gigabytes through distribution would time the
push, not the import. Each command runs as a child process, as an operator runs it.

    .venv/bin/python bench/moving.py                 # 5 GB in 100 MB layers
    .venv/bin/python bench/moving.py --gb 1 --layer-mb 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from registries import portside_executable

CHUNK = 4 * 1024 * 1024
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class Tree:
    """A distribution v2 tree under root, written file for file."""

    def __init__(self, root: Path) -> None:
        self.v2 = root / "docker" / "registry" / "v2"

    def blob(self, data_or_size: bytes | int) -> tuple[str, int]:
        """Write a blob (bytes, or that many random bytes); its digest and size."""
        temp = self.v2 / "blobs" / f".new-{os.urandom(8).hex()}"
        temp.parent.mkdir(parents=True, exist_ok=True)
        hasher, size = hashlib.sha256(), 0
        with temp.open("wb") as file:
            if isinstance(data_or_size, bytes):
                chunks = [data_or_size]
            else:
                chunks = (
                    os.urandom(min(CHUNK, data_or_size - done))
                    for done in range(0, data_or_size, CHUNK)
                )
            for chunk in chunks:
                hasher.update(chunk)
                file.write(chunk)
                size += len(chunk)
        encoded = hasher.hexdigest()
        final = self.v2 / "blobs" / "sha256" / encoded[:2] / encoded / "data"
        final.parent.mkdir(parents=True, exist_ok=True)
        temp.rename(final)
        return f"sha256:{encoded}", size

    def link(self, name: str, folder: str, digest: str) -> None:
        path = self.v2 / "repositories" / name / folder / "sha256" / digest[7:] / "link"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest)

    def tag(self, name: str, tag: str, digest: str) -> None:
        path = self.v2 / "repositories" / name / "_manifests" / "tags" / tag / "current" / "link"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(digest)


def fill(root: Path, total_bytes: int, layer_bytes: int) -> int:
    """Images of one shared base layer and one layer of their own, layer_bytes each, until the
    tree holds total_bytes; how many images."""
    tree = Tree(root)
    base = tree.blob(layer_bytes)
    written, images = base[1], 0
    while written < total_bytes:
        name = f"team{images % 10}/app{images}"
        own = tree.blob(layer_bytes)
        config = tree.blob(json.dumps({"architecture": "amd64", "n": images}).encode())
        manifest = tree.blob(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "digest": config[0], "size": config[1]},
                    "layers": [
                        {"mediaType": DOCKER_LAYER, "digest": d, "size": s} for d, s in (base, own)
                    ],
                }
            ).encode()
        )
        for digest in (base[0], own[0], config[0]):
            tree.link(name, "_layers", digest)
        tree.link(name, "_manifests/revisions", manifest[0])
        tree.tag(name, "v1", manifest[0])
        written += own[1]
        images += 1
    return images


def timed(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([portside_executable(), *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"portside {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return elapsed, done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=5.0, help="bytes of layers in the tree")
    parser.add_argument("--layer-mb", type=int, default=100, help="size of each layer")
    parser.add_argument("--dir", type=Path, help="work folder [default: a temporary one]")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portside-moving-", dir=options.dir) as work:
        base = Path(work)
        total = int(options.gb * 1e9)
        started = time.perf_counter()
        images = fill(base / "distribution", total, options.layer_mb * 1024 * 1024)
        print(
            f"wrote {images} images, {total / 1e9:.1f} GB in {time.perf_counter() - started:.0f} s"
        )
        config = base / "portside.yml"
        config.write_text(f"dev:\n  storage_path: {base / 'portside'}\n")
        restored = base / "restored.yml"
        restored.write_text(f"dev:\n  storage_path: {base / 'restored'}\n")
        results: dict[str, Any] = {"images": images, "bytes": total}
        steps = [
            (
                "import",
                ["import", "distribution", "--config", str(config), str(base / "distribution")],
            ),
            (
                "import again",
                ["import", "distribution", "--config", str(config), str(base / "distribution")],
            ),
            ("backup", ["backup", "--config", str(config), str(base / "backup")]),
            ("backup again", ["backup", "--config", str(config), str(base / "backup")]),
            ("verify", ["verify", "--config", str(config)]),
            ("restore", ["restore", "--config", str(restored), str(base / "backup")]),
        ]
        for step, args in steps:
            seconds, said = timed(*args)
            results[step] = seconds
            print(
                f"{step:>13}: {seconds:7.1f} s  {total / 1e9 / seconds:5.2f} GB/s  "
                f"{images / seconds:7.1f} images/s   ({said})"
            )
        print(json.dumps(results))


if __name__ == "__main__":
    main()
