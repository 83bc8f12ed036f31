"""The benchmark scenarios: what each one sends, what it times, and the number it reports.

Every number is "higher is better", so the ratio Portside/distribution reads the same way in
every row: above 1 Portside is faster.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx
from images import OCI_MANIFEST, make_image, sha256_digest, write_oci_layout
from push_client import push_images
from registries import Registry
from tools import (
    BenchError,
    curl,
    curl_head_load,
    download_concurrently,
    expect_status,
    skopeo_copy,
    with_digest,
    wrk_get,
)

KiB = 1024
MiB = 1024 * KiB
MB = 1_000_000  # throughput is reported in MB/s (10^6 bytes), sizes are set in MiB


@dataclass(frozen=True)
class Profile:
    """The sizes and durations of one run."""

    blob_size: int
    chunk_size: int
    load_seconds: int
    small_images: int
    skopeo_layer_size: int
    skopeo_layers: int = 4
    pull_streams: int = 8
    small_push_concurrency: int = 8
    load_threads: int = 2
    load_connections: int = 32


DEFAULT_PROFILE = Profile(
    blob_size=256 * MiB,
    chunk_size=16 * MiB,
    load_seconds=10,
    small_images=50,
    skopeo_layer_size=25 * MiB,
)
# --backend s3: half the blob size, so that four registries' three rounds fit the test S3
# server's 16 GiB store (the registries delete nothing).
S3_PROFILE = dataclasses.replace(DEFAULT_PROFILE, blob_size=128 * MiB)
QUICK_PROFILE = Profile(
    blob_size=32 * MiB,
    chunk_size=4 * MiB,
    load_seconds=2,
    small_images=20,
    skopeo_layer_size=4 * MiB,
)


@dataclass(frozen=True)
class Measurement:
    value: float
    note: str | None = None


def timed(action: Callable[[], None]) -> float:
    """Seconds `action` takes, after flushing dirty pages left by earlier steps.

    Without the sync, writeback of the previous registry's 256 MiB (or of the blob file just
    generated) could land inside this measurement and charge it to the wrong registry.
    """
    os.sync()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def start_upload(registry: Registry, repository: str) -> str:
    response = curl("POST", f"{registry.url}/v2/{repository}/blobs/uploads/")
    expect_status(response, 202, "POST blob upload")
    if not response.location:
        raise BenchError("POST blob upload answered no Location")
    return response.location


def check_blob_stored(registry: Registry, repository: str, digest: str, size: int) -> None:
    """A registry that answered 201 but kept the wrong bytes must not score."""
    # Followed: distribution with redirects on sends HEADs to the bucket too.
    response = httpx.head(
        f"{registry.url}/v2/{repository}/blobs/{digest}", timeout=30, follow_redirects=True
    )
    length = response.headers.get("content-length")
    if response.status_code != 200 or length != str(size):
        raise BenchError(
            f"HEAD of the pushed blob answered {response.status_code} "
            f"with Content-Length {length}, expected 200 and {size}"
        )


def push_blob_file(registry: Registry, repository: str, path: Path, digest: str) -> None:
    """POST then one PUT ?digest= carrying the whole body."""
    # The spec's single-request monolithic upload is a POST ?digest= with the body; distribution
    # 2.8 answers it 202, ignoring digest and body. Both registries therefore get the spec's
    # fallback, POST + PUT, so the two numbers measure the same request sequence.
    location = start_upload(registry, repository)
    response = curl("PUT", with_digest(location, digest), body=path)
    expect_status(response, 201, "PUT blob with body")


class Scenario(ABC):
    name: str
    title: str
    unit: str

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    def prepare(self, registry: Registry, scratch: Path) -> None:  # noqa: B027
        """Untimed setup, run once per registry before its first measurement."""

    @abstractmethod
    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        """One timed sample; fresh content or a fresh repository each round."""


class BlobPush(Scenario):
    """Push a fresh random blob in one of the three ways clients upload."""

    unit = "MB/s"
    TITLES: ClassVar[dict[str, str]] = {
        "monolithic": "blob push, monolithic (POST + PUT body)",
        "streamed": "blob push, streamed (one PATCH)",
        "chunked": "blob push, chunked (PATCH per chunk)",
    }

    def __init__(self, profile: Profile, mode: str) -> None:
        super().__init__(profile)
        self.mode = mode
        self.name = f"blob-push-{mode}"
        self.title = self.TITLES[mode]

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        size = self.profile.blob_size
        part_size = self.profile.chunk_size if self.mode == "chunked" else size
        data = os.urandom(size)
        digest = sha256_digest(data)
        folder = scratch / f"{self.name}-{registry.name}"
        folder.mkdir()
        parts = []
        for offset in range(0, size, part_size):
            part = folder / f"{offset:012d}"
            part.write_bytes(data[offset : offset + part_size])
            parts.append((part, min(part_size, size - offset)))
        del data
        repository = f"bench/{self.name}-r{round_index}"
        try:
            seconds = timed(lambda: self.upload(registry, repository, parts, digest))
            check_blob_stored(registry, repository, digest, size)
        finally:
            shutil.rmtree(folder)
        return Measurement(size / seconds / MB)

    def upload(
        self, registry: Registry, repository: str, parts: list[tuple[Path, int]], digest: str
    ) -> None:
        if self.mode == "monolithic":
            push_blob_file(registry, repository, parts[0][0], digest)
            return
        location = start_upload(registry, repository)
        if self.mode == "streamed":
            # docker and containerd stream the layer in one PATCH with chunked transfer encoding.
            response = curl("PATCH", location, body=parts[0][0], chunked=True)
            expect_status(response, 202, "PATCH streamed body")
            location = response.location
        else:
            offset = 0
            for part, part_size in parts:
                end = offset + part_size - 1
                response = curl(
                    "PATCH", location, body=part, headers=[f"Content-Range: {offset}-{end}"]
                )
                expect_status(response, 202, f"PATCH chunk {offset}-{end}")
                location = response.location
                offset = end + 1
        response = curl("PUT", with_digest(location, digest))
        expect_status(response, 201, "PUT ?digest= closing the upload")


class BlobPull(Scenario):
    """GET one big blob on N parallel streams; reports the aggregate rate."""

    unit = "MB/s"

    def __init__(self, profile: Profile, streams: int) -> None:
        super().__init__(profile)
        self.streams = streams
        self.name = f"blob-pull-{streams}x"
        self.title = (
            "blob pull, 1 stream" if streams == 1 else f"blob pull, {streams} streams (total)"
        )
        self.blob_url: dict[str, str] = {}

    def prepare(self, registry: Registry, scratch: Path) -> None:
        data = os.urandom(self.profile.blob_size)
        digest = sha256_digest(data)
        path = scratch / f"{self.name}-{registry.name}"
        path.write_bytes(data)
        repository = f"bench/{self.name}"
        try:
            push_blob_file(registry, repository, path, digest)
        finally:
            path.unlink()
        self.blob_url[registry.name] = f"{registry.url}/v2/{repository}/blobs/{digest}"

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        url = self.blob_url[registry.name]
        size = self.profile.blob_size
        seconds = timed(lambda: download_concurrently(url, self.streams, size))
        return Measurement(self.streams * size / seconds / MB)


class ManifestLoad(Scenario):
    """Requests/s on one small image's manifest, by tag, with 32 connections for N seconds."""

    unit = "req/s"

    def __init__(self, profile: Profile, method: str) -> None:
        super().__init__(profile)
        self.method = method
        self.name = f"manifest-{method.lower()}"
        tool = "wrk" if method == "GET" else "curl --parallel"
        self.title = f"manifest {method} by tag ({tool})"
        self.manifest_url: dict[str, str] = {}

    def prepare(self, registry: Registry, scratch: Path) -> None:
        image = make_image([16 * KiB])
        repository = f"bench/{self.name}"
        push_images(registry.url, repository, [image], 1, registry.authorization)
        url = f"{registry.url}/v2/{repository}/manifests/t0"
        # Check once that the load below hits a working endpoint with the right answer.
        headers = {"Accept": OCI_MANIFEST}
        if registry.authorization:
            headers["Authorization"] = registry.authorization
        response = httpx.request(self.method, url, headers=headers, timeout=30)
        if response.status_code != 200 or (
            self.method == "GET" and response.content != image.manifest.data
        ):
            raise BenchError(f"{self.method} manifest answered {response.status_code}")
        self.manifest_url[registry.name] = url

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        url = self.manifest_url[registry.name]
        profile = self.profile
        if self.method == "GET":
            result = wrk_get(
                url,
                OCI_MANIFEST,
                profile.load_seconds,
                profile.load_threads,
                profile.load_connections,
                scratch,
                registry.authorization,
            )
        else:
            result = curl_head_load(
                url,
                OCI_MANIFEST,
                profile.load_seconds,
                profile.load_connections,
                registry.authorization,
            )
        return Measurement(result.succeeded_per_second, result.failure_note())


class SmallImagePush(Scenario):
    """Push many small images (config + one 4-64 KiB layer + manifest), several at a time."""

    name = "small-image-push"
    unit = "images/s"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.title = (
            f"push {profile.small_images} small images, "
            f"{profile.small_push_concurrency} in parallel"
        )

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        # Same layer sizes for both registries in a round; the bytes are fresh random anyway.
        sizes = random.Random(round_index)
        images = [
            make_image([sizes.randint(4 * KiB, 64 * KiB)]) for _ in range(self.profile.small_images)
        ]
        repository = f"bench/small-r{round_index}"
        concurrency = self.profile.small_push_concurrency
        seconds = timed(lambda: push_images(registry.url, repository, images, concurrency))
        return Measurement(len(images) / seconds)


class SmallImagePushCpu(SmallImagePush):
    """The same pushes, per second of the server's own CPU time: a comparison of two Portside
    setups (--policies-ab) that other load on the machine barely disturbs."""

    name = "small-image-push-cpu"
    unit = "images/cpu-s"

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        sizes = random.Random(round_index)
        images = [
            make_image([sizes.randint(4 * KiB, 64 * KiB)]) for _ in range(self.profile.small_images)
        ]
        repository = f"bench/small-cpu-r{round_index}"
        concurrency = self.profile.small_push_concurrency
        before = registry.cpu_seconds()
        push_images(registry.url, repository, images, concurrency)
        return Measurement(len(images) / (registry.cpu_seconds() - before))


class SkopeoPush(Scenario):
    """`skopeo copy` of a multi-layer image from a local OCI layout into the registry."""

    name = "skopeo-push"
    title = "skopeo copy oci: -> registry"
    unit = "MB/s"

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        image = make_image([self.profile.skopeo_layer_size] * self.profile.skopeo_layers)
        layout = scratch / f"{self.name}-{registry.name}"
        write_oci_layout(image, layout, "latest")
        destination = f"docker://{registry.host}/bench/skopeo-push-r{round_index}:latest"
        try:
            seconds = timed(lambda: skopeo_copy(f"oci:{layout}:latest", destination))
        finally:
            shutil.rmtree(layout)
        return Measurement(image.size / seconds / MB)


class SkopeoPull(Scenario):
    """`skopeo copy` of a multi-layer image from the registry into a fresh OCI layout."""

    name = "skopeo-pull"
    title = "skopeo copy registry -> oci:"
    unit = "MB/s"

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.image_size: dict[str, int] = {}

    def reference(self, registry: Registry) -> str:
        return f"docker://{registry.host}/bench/{self.name}:latest"

    def prepare(self, registry: Registry, scratch: Path) -> None:
        image = make_image([self.profile.skopeo_layer_size] * self.profile.skopeo_layers)
        layout = scratch / f"{self.name}-source-{registry.name}"
        write_oci_layout(image, layout, "latest")
        try:
            skopeo_copy(f"oci:{layout}:latest", self.reference(registry))
        finally:
            shutil.rmtree(layout)
        self.image_size[registry.name] = image.size

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        # A fresh destination each round: skopeo skips blobs an OCI layout already holds.
        layout = scratch / f"{self.name}-{registry.name}-r{round_index}"
        try:
            seconds = timed(lambda: skopeo_copy(self.reference(registry), f"oci:{layout}:latest"))
        finally:
            shutil.rmtree(layout, ignore_errors=True)
        return Measurement(self.image_size[registry.name] / seconds / MB)


def build_scenarios(profile: Profile) -> list[Scenario]:
    return [
        BlobPush(profile, "monolithic"),
        BlobPush(profile, "streamed"),
        BlobPush(profile, "chunked"),
        BlobPull(profile, 1),
        BlobPull(profile, profile.pull_streams),
        ManifestLoad(profile, "HEAD"),
        ManifestLoad(profile, "GET"),
        SmallImagePush(profile),
        SmallImagePushCpu(profile),
        SkopeoPush(profile),
        SkopeoPull(profile),
    ]
