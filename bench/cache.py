"""The pull-through cache scenarios (`run.py --cache`): Portside's `mirroring` against
distribution's proxy mode, both caching the same upstream, a third registry (distribution) whose
access log tells how often each cache fetched every blob.

Every sample pulls a fresh image, pushed to the upstream just before (untimed) with new random
layers, so neither cache can hold it. A pull is what docker does: GET the manifest by tag, then
the config and the layers, `client_streams` at a time (docker's default max-concurrent-downloads
is 3). curl does the transfers, as in the other scenarios, so the harness is not the bottleneck.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from images import OCI_MANIFEST, Image, make_image
from push_client import push_images
from registries import Registry
from report import COLUMN_TITLES
from scenarios import MB, Measurement, MiB, Scenario, timed
from tools import TRANSFER_TIMEOUT_S, BenchError

TAG = "t0"  # the tag push_images gives the first image


@dataclass(frozen=True)
class CacheProfile:
    layers: int = 5
    layer_size: int = 20 * MiB
    clients: int = 20  # pulls at once in the concurrent scenario
    client_streams: int = 3  # blobs each client fetches at once, as docker does
    # An upstream log that has not grown for this long means the caches are done fetching:
    # distribution stores a blob with a fetch of its own that may outlast the client's pull.
    settle_seconds: float = 1.5


CACHE_PROFILE = CacheProfile()
QUICK_CACHE_PROFILE = CacheProfile(layer_size=2 * MiB, settle_seconds=1.0)

# One line of distribution's access log (Apache combined format), for a manifest or a blob.
ACCESS_LINE = re.compile(
    r'"(?P<method>GET|HEAD) /v2/(?P<name>\S+?)/(?P<kind>blobs|manifests)/(?P<reference>[^\s?]+)'
    r'\S* HTTP/[\d.]+" (?P<status>\d{3}) (?P<bytes>\d+|-)'
)


@dataclass(frozen=True)
class UpstreamCount:
    """What the upstream served for one repository, from its access log."""

    blob_gets: int = 0
    # GETs whose whole body was sent; the others were closed early by the cache (the upstream
    # logs what it wrote before it saw the close, mostly what fitted in the socket buffers).
    complete_gets: int = 0
    blob_heads: int = 0
    manifest_requests: int = 0
    blob_bytes: int = 0

    def __sub__(self, other: UpstreamCount) -> UpstreamCount:
        return UpstreamCount(
            *(
                getattr(self, name) - getattr(other, name)
                for name in (f.name for f in dataclasses.fields(self))
            )
        )


@dataclass
class Upstream:
    """The upstream registry, once started: pushes test images to it and reads its access log."""

    registry: Registry | None = None

    @property
    def started(self) -> Registry:
        if self.registry is None:
            raise BenchError("the upstream registry is not running")
        return self.registry

    def push(self, repository: str, image: Image) -> None:
        push_images(self.started.url, repository, [image], 1)

    def count(self, repository: str, image: Image) -> UpstreamCount:
        """The manifest and blob requests the upstream logged for repository so far."""
        sizes = {blob.digest: blob.size for blob in image.blobs}
        gets = complete = heads = manifests = size = 0
        text = self.started.log_path.read_text(errors="replace")
        for match in ACCESS_LINE.finditer(text):
            if match["name"] != repository:
                continue
            if match["kind"] == "manifests":
                manifests += 1
            elif match["method"] == "HEAD":
                heads += 1
            else:
                sent = int(match["bytes"]) if match["bytes"] != "-" else 0
                gets += 1
                complete += sent == sizes.get(match["reference"])
                size += sent
        return UpstreamCount(gets, complete, heads, manifests, size)

    def settle(
        self, repository: str, image: Image, quiet_seconds: float, limit_seconds: float = 60
    ) -> None:
        """Wait until the upstream has logged nothing new for repository for quiet_seconds: a
        cache may go on fetching after the client has its bytes (distribution stores a blob
        with a second fetch of its own), and the next sample must not overlap with that."""
        deadline = time.monotonic() + limit_seconds
        last = self.count(repository, image)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_seconds and time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.count(repository, image)
            if now != last:
                last, quiet_since = now, time.monotonic()


def curl_command(*arguments: str) -> list[str]:
    return [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        str(TRANSFER_TIMEOUT_S),
        *arguments,
    ]


def pull_image(
    registry: Registry, repository: str, image: Image, streams: int, scratch: Path
) -> None:
    """Pull as docker does: the manifest by tag, then config and layers `streams` at a time;
    every answer is checked (status, manifest bytes, blob sizes), the blob bytes are dropped."""
    base = f"{registry.url}/v2/{registry.cache_prefix}{repository}"
    manifest = scratch / f"manifest-{uuid.uuid4().hex}"
    done = subprocess.run(
        curl_command(
            "--header",
            f"Accept: {OCI_MANIFEST}",
            "--output",
            str(manifest),
            "--write-out",
            "%{http_code}",
            f"{base}/manifests/{TAG}",
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        if done.returncode != 0:
            raise BenchError(f"curl GET manifest failed: {done.stderr.strip()}")
        if done.stdout != "200" or manifest.read_bytes() != image.manifest.data:
            raise BenchError(f"GET manifest answered {done.stdout} or other bytes")
    finally:
        manifest.unlink(missing_ok=True)
    expected = {f"{base}/blobs/{blob.digest}": blob.size for blob in image.blobs}
    transfers: list[str] = []
    for url in expected:  # config first, then the layers, as the manifest lists them
        transfers += ["--output", "/dev/null", url]
    done = subprocess.run(
        curl_command(
            "--parallel",
            "--parallel-max",
            str(streams),
            "--write-out",
            r"%{http_code} %{size_download} %{url}\n",
            *transfers,
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"curl GET blobs failed: {done.stderr.strip()}")
    seen = 0
    for line in done.stdout.splitlines():
        status, size, url = line.split(" ", 2)
        if status != "200" or int(size) != expected.get(url):
            raise BenchError(f"GET blob answered {status} with {size} of {expected.get(url)} bytes")
        seen += 1
    if seen != len(expected):
        raise BenchError(f"curl reported {seen} of {len(expected)} blob transfers")


def pull_concurrently(
    registry: Registry, repository: str, image: Image, clients: int, streams: int, scratch: Path
) -> None:
    """`clients` pulls of the image at once, each a client of its own (its own curl processes
    and connections), released together."""
    start = threading.Barrier(clients)

    def client() -> None:
        start.wait()
        pull_image(registry, repository, image, streams, scratch)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        errors = [error for future in futures if (error := future.exception()) is not None]
    if errors:
        raise BenchError(f"{len(errors)} of {clients} pulls failed, first: {errors[0]}")


@dataclass
class UpstreamTally:
    """The upstream's counts of each sample of one scenario on one registry."""

    samples: list[UpstreamCount] = field(default_factory=list)
    blobs: int = 0
    image_size: int = 0

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(sample, attribute) for sample in self.samples)


class CacheScenario(Scenario):
    unit = "MB/s"

    def __init__(self, profile: CacheProfile, upstream: Upstream) -> None:
        # Not Scenario.__init__: these sizes are the cache profile's, not the blob scenarios'.
        self.cache = profile
        self.upstream = upstream
        self.tallies: dict[str, UpstreamTally] = {}

    def prepare(self, registry: Registry, scratch: Path) -> None:
        """One small pull through the cache, untimed, so that the first sample does not pay for
        what any cache does once (a connection to the upstream, first-use set-up)."""
        image = make_image([64 * 1024])
        repository = f"bench/{self.name}-warm-up-{registry.name}"
        self.upstream.push(repository, image)
        pull_image(registry, repository, image, self.cache.client_streams, scratch)
        self.upstream.settle(repository, image, self.cache.settle_seconds)

    def fresh_image(self, registry: Registry, round_index: int) -> tuple[str, Image, UpstreamCount]:
        """A new image of random layers in the upstream, which no cache has seen; and the
        upstream's count for it after the push (the push's own HEADs), to subtract."""
        image = make_image([self.cache.layer_size] * self.cache.layers)
        repository = f"bench/{self.name}-r{round_index}-{registry.name}"
        self.upstream.push(repository, image)
        return repository, image, self.upstream.count(repository, image)

    def tally(self, registry: Registry, image: Image, count: UpstreamCount) -> None:
        tally = self.tallies.setdefault(registry.name, UpstreamTally())
        tally.samples.append(count)
        tally.blobs = len(image.blobs)
        tally.image_size = image.size


class ColdPull(CacheScenario):
    name = "cache-cold"

    def __init__(self, profile: CacheProfile, upstream: Upstream) -> None:
        super().__init__(profile, upstream)
        size = profile.layers * profile.layer_size // MiB
        self.title = f"cache: cold pull, {profile.layers} layers, {size} MiB"

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        repository, image, pushed = self.fresh_image(registry, round_index)
        streams = self.cache.client_streams
        seconds = timed(lambda: pull_image(registry, repository, image, streams, scratch))
        self.upstream.settle(repository, image, self.cache.settle_seconds)
        self.tally(registry, image, self.upstream.count(repository, image) - pushed)
        return Measurement(image.size / seconds / MB)


class WarmPull(CacheScenario):
    name = "cache-warm"

    def __init__(self, profile: CacheProfile, upstream: Upstream) -> None:
        super().__init__(profile, upstream)
        self.title = "cache: warm pull (second pull of the same image)"

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        repository, image, _ = self.fresh_image(registry, round_index)
        streams = self.cache.client_streams
        # The first pull fills the cache (untimed); both caches are left to finish storing it.
        pull_image(registry, repository, image, streams, scratch)
        self.upstream.settle(repository, image, self.cache.settle_seconds)
        before = self.upstream.count(repository, image)
        seconds = timed(lambda: pull_image(registry, repository, image, streams, scratch))
        self.upstream.settle(repository, image, self.cache.settle_seconds)
        self.tally(registry, image, self.upstream.count(repository, image) - before)
        return Measurement(image.size / seconds / MB)


class ConcurrentColdPull(CacheScenario):
    def __init__(self, profile: CacheProfile, upstream: Upstream) -> None:
        super().__init__(profile, upstream)
        self.name = f"cache-cold-{profile.clients}x"
        self.title = f"cache: {profile.clients} concurrent cold pulls of one image (total)"

    def measure(self, registry: Registry, round_index: int, scratch: Path) -> Measurement:
        repository, image, pushed = self.fresh_image(registry, round_index)
        clients, streams = self.cache.clients, self.cache.client_streams
        seconds = timed(
            lambda: pull_concurrently(registry, repository, image, clients, streams, scratch)
        )
        self.upstream.settle(repository, image, self.cache.settle_seconds)
        self.tally(registry, image, self.upstream.count(repository, image) - pushed)
        return Measurement(clients * image.size / seconds / MB)


def build_cache_scenarios(profile: CacheProfile, upstream: Upstream) -> list[CacheScenario]:
    return [
        ColdPull(profile, upstream),
        WarmPull(profile, upstream),
        ConcurrentColdPull(profile, upstream),
    ]


UPSTREAM_HEADER = (
    "scenario",
    "registry",
    "blob GETs per blob",
    "of them complete",
    "blob HEADs per blob",
    "manifest GET+HEAD",
    "blob bytes fetched / image",
)


def upstream_rows(scenarios: list[CacheScenario]) -> list[list[str]]:
    """Per scenario and registry, the medians over the samples of what the upstream served."""
    rows = []
    for scenario in scenarios:
        for name, tally in scenario.tallies.items():
            if not tally.samples or not tally.blobs:
                continue
            rows.append(
                [
                    scenario.name,
                    COLUMN_TITLES.get(name, name),
                    f"{tally.median('blob_gets') / tally.blobs:.2f}",
                    f"{tally.median('complete_gets') / tally.blobs:.2f}",
                    f"{tally.median('blob_heads') / tally.blobs:.2f}",
                    f"{tally.median('manifest_requests'):.0f}",
                    f"{tally.median('blob_bytes') / tally.image_size:.2f}",
                ]
            )
    return rows


def upstream_table(scenarios: list[CacheScenario], markdown: bool) -> str:
    rows = upstream_rows(scenarios)
    title = (
        "What the upstream served per sample (median; from its access log, per pulled image; "
        "its GET /v2/ pings not counted):\n"
    )
    if markdown:
        lines = [
            "| " + " | ".join(UPSTREAM_HEADER) + " |",
            "| --- | --- |" + " ---: |" * (len(UPSTREAM_HEADER) - 2),
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
        return title + "\n" + "\n".join(lines)
    lines = [list(UPSTREAM_HEADER), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(UPSTREAM_HEADER))]

    def render(line: list[str] | tuple[str, ...]) -> str:
        return "  ".join(
            text.ljust(width) if i < 2 else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    return "\n".join(
        [title, render(UPSTREAM_HEADER), "  ".join("-" * w for w in widths), *map(render, rows)]
    )


def upstream_json(scenarios: list[CacheScenario]) -> dict[str, object]:
    return {
        scenario.name: {
            name: {
                "blobs": tally.blobs,
                "image_size": tally.image_size,
                "samples": [dataclasses.asdict(sample) for sample in tally.samples],
            }
            for name, tally in scenario.tallies.items()
        }
        for scenario in scenarios
    }
