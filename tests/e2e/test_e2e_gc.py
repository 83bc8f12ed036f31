"""Garbage collection against a real `portside serve`: skopeo pushes, deletes, `portside gc` runs
as its own process while skopeo keeps pushing, and every image still tagged pulls intact while
the bytes of what was deleted are gone from the storage folder. And the background collector."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from .clients import Skopeo, digest_of
from .conftest import ServerFactory
from .images import (
    Descriptor,
    Image,
    Layout,
    tagged_digest,
    verify_layout_blobs,
)
from .server import FLAVOR, PORTSIDE, PortsideServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KiB = 1024
Base = tuple[Descriptor, str]  # a layer and its diff_id


def add_based_image(layout: Layout, tag: str, base: Base) -> Image:
    """An image of two layers: base, which other images share, and one of its own."""
    if not layout.blob_path(base[0].digest).exists():
        layout.add_blob(layout_of(base).read_blob(base[0].digest), base[0].media_type)
    return layout.add_based_image(tag, base, 8 * KiB)


_BASE_LAYOUTS: dict[str, Layout] = {}


def new_base(layout: Layout) -> Base:
    base = layout.add_layer(96 * KiB)
    _BASE_LAYOUTS[base[0].digest] = layout
    return base


def layout_of(base: Base) -> Layout:
    return _BASE_LAYOUTS[base[0].digest]


def pull_intact(
    skopeo: Skopeo, server: PortsideServer, tmp: Path, tag: str, layout: Layout
) -> None:
    """skopeo pulls the tag into a layout of its own: the same manifest digest, and every blob
    byte for byte what was pushed."""
    image = layout.images[layout.tags[tag].digest]
    pulled = tmp / f"pulled-{tag}"
    skopeo.copy(f"docker://{server.host}/e2e/gc:{tag}", f"oci:{pulled}:{tag}")
    assert tagged_digest(pulled, tag) == image.manifest.digest
    on_disk = verify_layout_blobs(pulled)  # each blob hashes to its name
    for blob in [image.manifest, *image.blobs]:
        assert on_disk.get(blob.digest) == blob.size, f"{tag}: {blob.digest} missing or resized"


class Pusher(threading.Thread):
    """Pushes one new image after another into e2e/gc until stopped; a push the registry
    refuses (a collection took a blob it had uploaded) is pushed again, as a client would."""

    def __init__(self, skopeo: Skopeo, server: PortsideServer, layout: Layout, base: Base) -> None:
        super().__init__(daemon=True)
        self.skopeo, self.server, self.layout, self.base = skopeo, server, layout, base
        self.stop = threading.Event()
        self.pushed: list[str] = []
        self.refused = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n = 0
            while not self.stop.is_set():
                n += 1
                tag = f"live-{n}"
                add_based_image(self.layout, tag, self.base)
                for _ in range(5):
                    pushed = self.skopeo(
                        "copy",
                        "--dest-tls-verify=false",
                        "--preserve-digests",
                        "--retry-times=0",
                        self.layout.ref(tag),
                        f"docker://{self.server.host}/e2e/gc:{tag}",
                        check=False,
                    )
                    if pushed.returncode == 0:
                        self.pushed.append(tag)
                        break
                    assert "manifest blob unknown" in pushed.stderr.lower() or (
                        "MANIFEST_BLOB_UNKNOWN" in pushed.stderr
                    ), pushed.stderr
                    self.refused += 1
                else:
                    raise AssertionError(f"{tag} refused five times")
        except BaseException as error:
            self.error = error


def run_gc(server: PortsideServer, *options: str) -> subprocess.CompletedProcess[str]:
    command = [str(PORTSIDE), "gc", "--config", str(server.config_path), "--flavor", FLAVOR]
    done = subprocess.run(
        [*command, *options], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_gc_with_pushes_in_flight_keeps_every_tagged_image_and_frees_the_deleted_bytes(
    tmp_path: Path, portside: PortsideServer, skopeo: Skopeo
) -> None:
    source = Layout(tmp_path / "source")
    base_layer = new_base(source)
    images = {f"v{n}": add_based_image(source, f"v{n}", base_layer) for n in range(6)}
    for tag in images:
        skopeo.copy(source.ref(tag), f"docker://{portside.host}/e2e/gc:{tag}")
    deleted = {tag: images[tag] for tag in ("v1", "v3", "v5")}
    for image in deleted.values():
        skopeo(
            "delete",
            "--tls-verify=false",
            f"docker://{portside.host}/e2e/gc@{image.manifest.digest}",
        )
    base = images["v0"].layers[0].digest
    assert all(image.layers[0].digest == base for image in images.values())
    dry = run_gc(portside, "--dry-run", "--grace-period", "0")
    assert "would remove" in dry.stdout
    assert all(portside.stored_blob(image.manifest.digest).is_file() for image in deleted.values())

    pusher = Pusher(skopeo, portside, Layout(tmp_path / "live"), base_layer)
    pusher.start()
    deadline = time.monotonic() + 60
    while not pusher.pushed and pusher.error is None:  # pushes are going on
        assert time.monotonic() < deadline, "no push went through"
        time.sleep(0.05)
    collected = run_gc(portside, "--grace-period", "0")
    for _ in range(2):  # and again, while the pushes go on
        run_gc(portside, "--grace-period", "0")
    pushed_during = len(pusher.pushed)
    while len(pusher.pushed) < pushed_during + 2 and pusher.error is None:
        assert time.monotonic() < deadline + 60, "pushes stopped after the collection"
        time.sleep(0.05)
    pusher.stop.set()
    pusher.join(120)
    assert pusher.error is None, pusher.error

    assert "removed" in collected.stdout, collected.stdout
    for tag in ("v0", "v2", "v4"):
        pull_intact(skopeo, portside, tmp_path, tag, source)
    for tag in pusher.pushed:
        pull_intact(skopeo, portside, tmp_path, tag, pusher.layout)
    for tag, image in deleted.items():
        for blob in [image.manifest, image.config, image.layers[1]]:
            assert not portside.stored_blob(blob.digest).exists(), f"{tag}: {blob.digest} left"
        response = httpx.get(f"{portside.url}/v2/e2e/gc/manifests/{image.manifest.digest}")
        assert response.status_code == 404
    assert portside.stored_blob(base).is_file()
    tags = set(skopeo.list_tags(f"docker://{portside.host}/e2e/gc"))
    assert tags == {"v0", "v2", "v4", *pusher.pushed}


def test_the_background_collector_runs_in_the_server(
    tmp_path: Path, portside_factory: ServerFactory
) -> None:
    server = portside_factory(workers=2, gc_interval="2s", gc_grace_period="0")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        garbage = b"pushed, then deleted"
        digest = digest_of(garbage)
        response = client.post(
            "/v2/e2e/bg/blobs/uploads/", params={"digest": digest}, content=garbage
        )
        assert response.status_code == 201
        assert client.delete(f"/v2/e2e/bg/blobs/{digest}").status_code == 202
        deadline = time.monotonic() + 30
        while server.stored_blob(digest).exists():
            assert time.monotonic() < deadline, "the background collector did not collect"
            time.sleep(0.2)
    assert "garbage collection removed" in server.log_text()
