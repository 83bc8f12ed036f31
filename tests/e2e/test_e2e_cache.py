"""The pull-through cache (`mirroring`) end to end: a real `portside serve` in front of real
upstreams on loopback (CNCF distribution, open or behind htpasswd, and a second Portside with its
token service), pulled through by skopeo, podman and the Docker engine.

Each test starts its own upstream, so that its access log counts only the test's requests: a GET
of a blob there is one fetch by the cache.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from portside.auth.htpasswd import add_user
from upstream.registries import Distribution, running_distribution

from .clients import Podman, Skopeo, podman_for, skopeo_for
from .conftest import EngineFactory, ServerFactory
from .images import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Image,
    Layout,
    MiB,
    canonical_json,
    multi_layer_image,
    tagged_digest,
    verify_layout_blobs,
)
from .server import FLAVOR, PORTSIDE, AccessLine, PortsideServer

pytestmark = pytest.mark.e2e

KiB = 1024
USER, SECRET = "puller", "Upstream-Secret-1"
PUSHER, PUSHER_SECRET = "pusher", "Pusher-Secret-2"
TOKEN_SERVICE = "portside-upstream-e2e"
LOG_WAIT = 10.0


# Upstreams and caches ---------------------------------------------------------------------------


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Distribution]:
    """An open distribution of this test's own."""
    with running_distribution(tmp_path / "upstream") as registry:
        yield registry


def start_cache(
    portside_factory: ServerFactory, workers: int = 2, **mirroring: Any
) -> PortsideServer:
    return portside_factory(workers=workers, mirroring=mirroring)


def cache_of(portside_factory: ServerFactory, url: str, **mirroring: Any) -> PortsideServer:
    """A cache with the upstream at url mounted at `up/`."""
    upstreams = {"up": {"url": url, **mirroring.pop("upstream", {})}}
    return start_cache(portside_factory, upstreams=upstreams, **mirroring)


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Any]:
    """`clients(cache)`: (skopeo, podman) for a cache server, each with state under tmp_path."""
    with contextlib.ExitStack() as stack:

        def make(server: PortsideServer) -> tuple[Skopeo, Podman]:
            base = tmp_path / f"clients-{server.port}"
            skopeo = skopeo_for(base / "skopeo", server.host)
            return skopeo, stack.enter_context(podman_for(base / "podman", server.host))

        yield make


def push(skopeo: Skopeo, layout: Layout, tag: str, destination: str, *options: str) -> None:
    skopeo.copy(layout.ref(tag), f"docker://{destination}", *options)


def pull_intact(skopeo: Skopeo, source: str, into: Path, layout: Layout, digest: str) -> None:
    """skopeo copies source into a layout of its own: the manifest digest is `digest`, and every
    blob of that image is byte for byte the upstream's."""
    into.parent.mkdir(parents=True, exist_ok=True)
    skopeo.copy(f"docker://{source}", f"oci:{into}:pulled")
    assert tagged_digest(into, "pulled") == digest
    on_disk = verify_layout_blobs(into)
    image = layout.images[digest]
    for blob in [image.manifest, *image.blobs]:
        assert on_disk.get(blob.digest) == blob.size, f"{blob.digest} missing or resized"


def upstream_requests(registry: Distribution, method: str, path: str) -> int:
    """How many requests of method and path distribution's access log shows."""
    return len(re.findall(rf'"{method} {re.escape(path)} HTTP', registry.log_text()))


def digests_requested(registry: Distribution, since: int = 0) -> set[str]:
    """Every sha256 digest in a request line of distribution's log from offset since on."""
    log = registry.log_text()[since:]
    return set(re.findall(r'"[A-Z]+ /v2/\S*?(sha256:[0-9a-f]{64}) HTTP', log))


def wait_for_access(
    server: PortsideServer, method: str, path: str, count: int = 1
) -> list[AccessLine]:
    """The access lines of method and path, once there are count (a line can lag its
    response)."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        found = [
            line
            for line in server.access_lines()
            if line.method == method and line.path.split("?")[0] == path
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def run_gc(server: PortsideServer, *options: str) -> subprocess.CompletedProcess[str]:
    command = [str(PORTSIDE), "gc", "--config", str(server.config_path), "--flavor", FLAVOR]
    done = subprocess.run(
        [*command, *options], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def stored(server: PortsideServer, digest: str) -> bool:
    return server.stored_blob(digest).is_file()


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


# Pulls through the cache ------------------------------------------------------------------------


def test_skopeo_and_podman_pull_through_the_cache_by_tag_and_by_digest_a_miss_then_hits(
    tmp_path: Path, upstream: Distribution, portside_factory: ServerFactory, clients: Any
) -> None:
    cache = cache_of(portside_factory, upstream.url)
    skopeo, podman = clients(cache)
    layout = multi_layer_image(tmp_path / "source")
    image = layout.images[layout.tags["v1"].digest]
    repository = unique("e2e/app")
    push(skopeo, layout, "v1", f"{upstream.host}/{repository}:v1")
    name = f"{cache.host}/up/{repository}"

    pull_intact(skopeo, f"{name}:v1", tmp_path / "by-tag", layout, image.manifest.digest)
    pull_intact(skopeo, f"{name}:v1", tmp_path / "again", layout, image.manifest.digest)
    at = f"{name}@{image.manifest.digest}"
    pull_intact(skopeo, at, tmp_path / "by-digest", layout, image.manifest.digest)
    podman("pull", "--tls-verify=false", "-q", f"{name}:v1")
    podman("pull", "--tls-verify=false", "-q", at)

    listed = [entry for entry in podman.images() if entry.get("Digest") == image.manifest.digest]
    assert listed, podman.images()
    # One fetch of each blob, however often it was pulled; one of the manifest by its tag.
    for blob in image.blobs:
        assert upstream_requests(upstream, "GET", f"/v2/{repository}/blobs/{blob.digest}") == 1
    assert upstream_requests(upstream, "GET", f"/v2/{repository}/manifests/v1") == 1
    # The access log says how: a miss fetched from the upstream, then hits.
    manifests = wait_for_access(cache, "GET", f"/v2/up/{repository}/manifests/v1", 3)
    assert [line.notes.get("cache") for line in manifests][:1] == ["miss"], manifests
    assert manifests[0].notes["upstream"] == upstream.url
    assert all(line.notes.get("cache") == "hit" for line in manifests[1:]), manifests
    assert len(manifests) >= 3
    layer = image.layers[1]
    blobs = wait_for_access(cache, "GET", f"/v2/up/{repository}/blobs/{layer.digest}", 2)
    assert blobs[0].notes.get("cache") == "miss", blobs
    assert blobs[0].notes.get("fetched") == str(layer.size), blobs
    assert all(line.notes.get("cache") == "hit" for line in blobs[1:]), blobs  # from storage


def three_platforms(path: Path) -> tuple[Layout, dict[str, Image]]:
    layout = Layout(path)
    platforms = {
        arch: layout.add_image([64 * KiB + n * KiB, 4 * KiB], architecture=arch)
        for n, arch in enumerate(("amd64", "arm64", "ppc64le"))
    }
    layout.add_index(
        [(image, {"architecture": arch, "os": "linux"}) for arch, image in platforms.items()],
        tag="multi",
    )
    return layout, platforms


def test_pulling_one_platform_of_an_index_fetches_only_that_platforms_blobs(
    tmp_path: Path, upstream: Distribution, portside_factory: ServerFactory, clients: Any
) -> None:
    cache = cache_of(portside_factory, upstream.url)
    skopeo, podman = clients(cache)
    layout, platforms = three_platforms(tmp_path / "source")
    index = layout.tags["multi"].digest
    repository = unique("e2e/multi")
    push(skopeo, layout, "multi", f"{upstream.host}/{repository}:multi", "--all")
    name = f"{cache.host}/up/{repository}"
    pushed = len(upstream.log_text())  # what follows is the cache's

    raw = skopeo.inspect_raw(f"docker://{name}:multi")
    assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == index
    arm64 = platforms["arm64"]
    skopeo(
        "--override-arch",
        "arm64",
        "copy",
        "--src-tls-verify=false",
        "--retry-times=0",
        "--preserve-digests",
        f"docker://{name}:multi",
        f"oci:{tmp_path / 'arm64'}:pulled",
    )
    assert tagged_digest(tmp_path / "arm64", "pulled") == arm64.manifest.digest
    on_disk = verify_layout_blobs(tmp_path / "arm64")
    assert all(on_disk.get(blob.digest) == blob.size for blob in arm64.blobs)
    podman("pull", "--tls-verify=false", "-q", "--arch", "amd64", f"{name}:multi")
    inspected = podman("image", "inspect", f"{name}:multi", "--format", "{{.Digest}}")
    assert inspected.stdout.strip() in (platforms["amd64"].manifest.digest, index)

    requested = digests_requested(upstream, pushed)
    for arch in ("amd64", "arm64"):
        for blob in platforms[arch].blobs:
            path = f"/v2/{repository}/blobs/{blob.digest}"
            assert upstream_requests(upstream, "GET", path) == 1, (arch, blob)
    ppc64le = platforms["ppc64le"]
    never = {ppc64le.manifest.digest, *(blob.digest for blob in ppc64le.blobs)}
    assert not never & requested, "the cache fetched a platform nobody pulled"


# Upstreams that want credentials ----------------------------------------------------------------


def test_an_upstream_behind_htpasswd_is_pulled_with_the_caches_credentials(
    tmp_path: Path, portside_factory: ServerFactory, clients: Any
) -> None:
    with running_distribution(tmp_path / "upstream", USER, SECRET) as upstream:
        cache = cache_of(
            portside_factory, upstream.url, upstream={"username": USER, "password": SECRET}
        )
        skopeo, _ = clients(cache)
        layout = multi_layer_image(tmp_path / "source", sizes=[20 * KiB, 30 * KiB])
        digest = layout.tags["v1"].digest
        push(
            skopeo, layout, "v1", f"{upstream.host}/private/app:v1", f"--dest-creds={USER}:{SECRET}"
        )

        pull_intact(skopeo, f"{cache.host}/up/private/app:v1", tmp_path / "p", layout, digest)

        assert SECRET not in cache.log_text()
        # Anonymous requests to the upstream are refused: the cache's were not.
        anonymous = httpx.get(f"{upstream.url}/v2/private/app/manifests/v1")
        assert anonymous.status_code == 401


@pytest.fixture
def token_upstream(tmp_path: Path, portside_factory: ServerFactory) -> PortsideServer:
    """A Portside with htpasswd users and its token service (realm on its own host): USER may
    pull, PUSHER may push; nobody pulls anonymously."""
    htpasswd = tmp_path / "upstream-htpasswd"
    for user, secret in ((USER, SECRET), (PUSHER, PUSHER_SECRET)):
        add_user(htpasswd, user, secret, rounds=4)
    auth = {
        "htpasswd": {"path": str(htpasswd)},
        "token": {"service": TOKEN_SERVICE},
        "access": {
            "rules": [
                {"repositories": ["*"], "users": [USER], "actions": ["pull"]},
                {"repositories": ["*"], "users": [PUSHER], "actions": ["*"]},
            ]
        },
    }
    return portside_factory(workers=1, auth=auth)


def test_a_portside_upstream_with_a_token_service_is_pulled_with_the_caches_credentials(
    tmp_path: Path, token_upstream: PortsideServer, portside_factory: ServerFactory, clients: Any
) -> None:
    cache = cache_of(
        portside_factory, token_upstream.url, upstream={"username": USER, "password": SECRET}
    )
    skopeo, podman = clients(cache)
    layout = multi_layer_image(tmp_path / "source", sizes=[20 * KiB, 30 * KiB])
    digest = layout.tags["v1"].digest
    destination = f"{token_upstream.host}/team/app:v1"
    push(skopeo, layout, "v1", destination, f"--dest-creds={PUSHER}:{PUSHER_SECRET}")

    pull_intact(skopeo, f"{cache.host}/up/team/app:v1", tmp_path / "pulled", layout, digest)
    podman("pull", "--tls-verify=false", "-q", f"{cache.host}/up/team/app@{digest}")

    tokens = [line for line in token_upstream.access_lines() if line.path == "/auth/token"]
    assert any(line.status == 200 for line in tokens), token_upstream.access_lines()
    assert SECRET not in cache.log_text()


# A failing upstream, a moved tag ----------------------------------------------------------------


def test_a_stopped_upstream_leaves_cached_tags_pulling_and_fails_uncached_ones_quickly(
    tmp_path: Path, portside_factory: ServerFactory, clients: Any
) -> None:
    with running_distribution(tmp_path / "upstream") as upstream:
        cache = cache_of(
            portside_factory,
            upstream.url,
            upstream={"tags_cache_ttl": "1s"},
            connect_timeout="2s",
            read_timeout="5s",
        )
        skopeo, podman = clients(cache)
        layout = multi_layer_image(tmp_path / "source", sizes=[20 * KiB, 30 * KiB])
        layout.add_image([10 * KiB], tag="other")
        for tag in ("v1", "other"):
            push(skopeo, layout, tag, f"{upstream.host}/down/app:{tag}")
        digest = layout.tags["v1"].digest
        name = f"{cache.host}/up/down/app"
        pull_intact(skopeo, f"{name}:v1", tmp_path / "before", layout, digest)
    time.sleep(1.2)  # the tag's time to live is over: it is checked upstream, which is gone

    started = time.monotonic()
    pull_intact(skopeo, f"{name}:v1", tmp_path / "after", layout, digest)
    stale = time.monotonic() - started
    started = time.monotonic()
    refused = skopeo(
        "copy",
        "--src-tls-verify=false",
        "--retry-times=0",
        f"docker://{name}:other",
        f"oci:{tmp_path / 'other'}:other",
        check=False,
    )
    failed = time.monotonic() - started
    by_podman = podman("pull", "--tls-verify=false", f"{name}:other", check=False)

    assert stale < 15
    assert refused.returncode != 0
    assert failed < 15, failed
    assert "503" in refused.stderr or "unavailable" in refused.stderr.lower(), refused.stderr
    assert by_podman.returncode != 0
    assert "unavailable" in by_podman.stderr.lower() or "503" in by_podman.stderr
    lines = wait_for_access(cache, "GET", "/v2/up/down/app/manifests/v1", 2)
    assert lines[-1].notes.get("cache") == "stale", lines
    uncached = wait_for_access(cache, "GET", "/v2/up/down/app/manifests/other")
    assert uncached, cache.access_lines()
    assert all(line.status == 503 for line in uncached), uncached


def test_a_tag_moved_upstream_is_seen_after_the_ttl_and_not_before(
    tmp_path: Path, upstream: Distribution, portside_factory: ServerFactory, clients: Any
) -> None:
    ttl = 2.0
    cache = cache_of(portside_factory, upstream.url, tags_cache_ttl="2s")
    skopeo, _ = clients(cache)
    layout = multi_layer_image(tmp_path / "source", sizes=[8 * KiB])
    second = layout.add_image([9 * KiB], tag="v2")
    first = layout.images[layout.tags["v1"].digest]
    for tag in ("v1", "v2"):
        push(skopeo, layout, tag, f"{upstream.host}/ttl/app:{tag}")
    name = f"docker://{cache.host}/up/ttl/app:v1"

    def served() -> str:
        return f"sha256:{hashlib.sha256(skopeo.inspect_raw(name)).hexdigest()}"

    assert served() == first.manifest.digest
    cached_at = time.monotonic()
    moved = httpx.put(
        f"{upstream.url}/v2/ttl/app/manifests/v1",
        content=layout.read_blob(second.manifest.digest),
        headers={"Content-Type": second.manifest.media_type},
    )
    assert moved.status_code == 201, moved.text
    before = served()
    checked_before = time.monotonic() - cached_at
    time.sleep(max(0.0, ttl + 0.3 - (time.monotonic() - cached_at)))
    after = served()

    assert checked_before < ttl, "too slow to look before the TTL ended"
    assert before == first.manifest.digest
    assert after == second.manifest.digest
    notes = [
        line.notes.get("cache")
        for line in wait_for_access(cache, "GET", "/v2/up/ttl/app/manifests/v1", 3)
    ]
    assert notes == ["miss", "hit", "miss"], notes


# One fetch however many pull ---------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_concurrent_pulls_of_an_uncached_200_mib_blob_fetch_it_once(
    upstream: Distribution, portside_factory: ServerFactory
) -> None:
    """Two workers: the pulls land in both processes, so one follows the other's fill through
    the lease in the metadata store."""
    blob = os.urandom(200 * MiB)
    digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
    with httpx.Client(base_url=upstream.url, timeout=120) as client:
        started = client.post("/v2/big/blob/blobs/uploads/")
        location = httpx.URL(started.headers["location"]).copy_merge_params({"digest": digest})
        assert client.put(location, content=blob).status_code == 201
    del blob
    cache = cache_of(portside_factory, upstream.url)
    url = f"{cache.url}/v2/up/big/blob/blobs/{digest}"
    ready = threading.Barrier(20)

    def pull(_: int) -> tuple[int, str, int]:
        hasher = hashlib.sha256()
        with httpx.Client(timeout=120) as client:
            ready.wait(30)
            with client.stream("GET", url) as response:
                for chunk in response.iter_bytes(MiB):
                    hasher.update(chunk)
                return (
                    response.status_code,
                    f"sha256:{hasher.hexdigest()}",
                    response.num_bytes_downloaded,
                )

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(pull, range(20)))

    assert all(status == 200 for status, _, _ in answers), answers
    assert all(got == digest for _, got, _ in answers), answers
    # One request of the blob upstream: no second fetch, and no check that the other worker's
    # requests make once the fill they waited for is over (a GET the cache closed early).
    requests = re.findall(rf'"([A-Z]+) /v2/big/blob/blobs/{digest} HTTP', upstream.log_text())
    assert requests == ["GET"], requests


# Pushes -----------------------------------------------------------------------------------------


def test_a_push_beside_the_cache_works_and_into_its_namespace_is_denied(
    tmp_path: Path, upstream: Distribution, portside_factory: ServerFactory, clients: Any
) -> None:
    cache = cache_of(portside_factory, upstream.url)
    skopeo, _ = clients(cache)
    layout = multi_layer_image(tmp_path / "source", sizes=[16 * KiB])
    digest = layout.tags["v1"].digest

    push(skopeo, layout, "v1", f"{cache.host}/team/app:v1")
    refused = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--retry-times=0",
        layout.ref("v1"),
        f"docker://{cache.host}/up/team/app:v1",
        check=False,
    )

    pull_intact(skopeo, f"{cache.host}/team/app:v1", tmp_path / "local", layout, digest)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower(), refused.stderr
    assert upstream_requests(upstream, "GET", "/v2/team/app/manifests/v1") == 0
    refusals = [line for line in cache.access_lines() if line.path.startswith("/v2/up/team/app")]
    assert refusals, cache.access_lines()
    assert all(line.status == 403 for line in refusals if line.method in ("POST", "PUT"))


# Garbage collection -----------------------------------------------------------------------------


class Puller(threading.Thread):
    """Pulls each tag through the cache once (each a first pull: fetched while stored), one
    after another, recording the ones that came through intact."""

    def __init__(
        self,
        skopeo: Skopeo,
        cache: PortsideServer,
        layout: Layout,
        into: Path,
        tags: list[str],
        collecting: threading.Semaphore,
    ) -> None:
        super().__init__(daemon=True)
        self.skopeo, self.cache, self.layout = skopeo, cache, layout
        self.into, self.tags = into, tags
        # Released as each collection starts: a pull after the first waits for one, so that
        # pulls and collections overlap however fast either is.
        self.collecting = collecting
        self.pulled: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for index, tag in enumerate(self.tags):
                if index:
                    self.collecting.acquire(timeout=60)
                digest = self.layout.tags[tag].digest
                source = f"{self.cache.host}/up/gc/app:{tag}"
                pull_intact(self.skopeo, source, self.into / tag, self.layout, digest)
                self.pulled.append(tag)
        except BaseException as error:
            self.error = error


@pytest.mark.slow
def test_gc_while_the_cache_fills_loses_nothing_referenced(
    tmp_path: Path, portside_factory: ServerFactory, clients: Any
) -> None:
    """`portside gc --grace-period 0` runs again and again (three times at least) while skopeo
    pulls uncached images through the cache; then the upstream is stopped, and every pulled
    image still pulls intact, from the cache alone."""
    layout = Layout(tmp_path / "source")
    tags = [f"v{n}" for n in range(12)]
    for n, tag in enumerate(tags):
        layout.add_image([512 * KiB + n, 3 * MiB + n, 4 * KiB], tag=tag)
    with running_distribution(tmp_path / "upstream") as upstream:
        cache = cache_of(portside_factory, upstream.url)
        skopeo, _ = clients(cache)
        for tag in tags:
            push(skopeo, layout, tag, f"{upstream.host}/gc/app:{tag}")
        collecting = threading.Semaphore(0)
        puller = Puller(skopeo, cache, layout, tmp_path / "during", tags, collecting)
        puller.start()
        collected, overlapping = [], 0
        while len(collected) < 3 or (puller.is_alive() and len(collected) < 2 * len(tags)):
            overlapping += puller.is_alive()
            collecting.release()
            collected.append(run_gc(cache, "--grace-period", "0"))
        puller.join(120)
        assert puller.error is None, puller.error
        assert puller.pulled == tags
        fetches = upstream_requests(upstream, "GET", "/v2/gc/app/manifests/v1")
    assert fetches == 1
    assert overlapping >= 2, "the pulls were over before the collections began"

    for tag in tags:
        digest = layout.tags[tag].digest
        into = tmp_path / "after" / tag
        pull_intact(skopeo, f"{cache.host}/up/gc/app:{tag}", into, layout, digest)
    assert all("removed" in done.stdout for done in collected), collected[0].stdout


def test_gc_expires_unpulled_cached_images_and_keeps_the_blobs_local_images_share(
    tmp_path: Path, portside_factory: ServerFactory, clients: Any
) -> None:
    """mirroring.keep_unpulled: a cached image nobody pulled for that long goes at the next
    collection, with what only it referenced; a layer a local image shares stays."""
    layout = Layout(tmp_path / "source")
    cached = layout.add_image([40 * KiB, 20 * KiB], tag="cached")
    shared = cached.layers[0]
    with running_distribution(tmp_path / "upstream") as upstream:
        cache = cache_of(portside_factory, upstream.url, keep_unpulled="2s")
        skopeo, _ = clients(cache)
        push(skopeo, layout, "cached", f"{upstream.host}/exp/app:v1")
        name = f"{cache.host}/up/exp/app"
        pull_intact(skopeo, f"{name}:v1", tmp_path / "pulled", layout, cached.manifest.digest)
        local = _image_sharing(layout, cached, "local")
        push(skopeo, layout, "local", f"{cache.host}/team/local:v1")
        time.sleep(2.5)
        kept = run_gc(cache, "--grace-period", "1h")  # recent blobs stay; expiry only
        collected = run_gc(cache, "--grace-period", "0")
    # The upstream is gone: what is not cached any more cannot be served.
    expired = httpx.get(f"{cache.url}/v2/up/exp/app/manifests/v1")

    assert expired.status_code == 503, expired.text
    assert re.search(r"cached manifests not pulled lately\W+1\b", kept.stdout), kept.stdout
    assert re.search(r"\bblobs\W+3\b", collected.stdout), collected.stdout
    for blob in (cached.manifest, cached.config, cached.layers[1]):
        assert not stored(cache, blob.digest), blob
    assert stored(cache, shared.digest)
    pull_intact(skopeo, f"{cache.host}/team/local:v1", tmp_path / "local", layout, local)


def _image_sharing(layout: Layout, image: Image, tag: str) -> str:
    """An image in layout whose first layer is image's, plus one of its own; its digest."""
    own, own_diff_id = layout.add_layer(12 * KiB)
    config = json.loads(layout.read_blob(image.config.digest))
    config["rootfs"]["diff_ids"] = [config["rootfs"]["diff_ids"][0], own_diff_id]
    config_descriptor = layout.add_blob(canonical_json(config), OCI_CONFIG)
    manifest = layout.add_blob(
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_descriptor.to_json(),
                "layers": [image.layers[0].to_json(), own.to_json()],
            }
        ),
        OCI_MANIFEST,
    )
    layout.images[manifest.digest] = Image(manifest, config_descriptor, [image.layers[0], own])
    layout.tag(tag, manifest)
    return manifest.digest


# Docker -----------------------------------------------------------------------------------------


def test_docker_pulls_through_the_cache_as_its_registry_mirror_and_by_prefix(
    tmp_path: Path,
    upstream: Distribution,
    portside_factory: ServerFactory,
    docker_engine_factory: EngineFactory,
    clients: Any,
) -> None:
    """docker uses registry-mirrors only for Docker Hub's names: `docker pull NAME:v1` asks the
    mirror for library/NAME, which the cache's root upstream (`mirroring.source`) serves. With
    no network, a success proves the mirror served it."""
    cache = start_cache(
        portside_factory, source=upstream.url, upstreams={"up": {"url": upstream.url}}
    )
    skopeo, _ = clients(cache)
    layout = multi_layer_image(tmp_path / "source", sizes=[24 * KiB, 8 * KiB])
    digest = layout.tags["v1"].digest
    image = layout.images[digest]
    name = unique("e2e-cache")
    push(skopeo, layout, "v1", f"{upstream.host}/library/{name}:v1")
    engine = docker_engine_factory(
        {"registry-mirrors": [cache.url], "insecure-registries": [cache.host]}
    )
    docker = engine.client(tmp_path / "docker")

    assert docker.pull(f"{name}:v1") == digest
    by_prefix = f"{cache.host}/up/library/{name}:v1"
    assert docker.pull(by_prefix) == digest

    assert docker.inspect(f"{name}:v1")["Id"] == image.config.digest
    assert docker.inspect(by_prefix)["Id"] == image.config.digest
    mirrored = wait_for_access(cache, "HEAD", f"/v2/library/{name}/manifests/v1")
    assert mirrored, cache.access_lines()
    assert mirrored[0].status == 200
    assert mirrored[0].notes.get("cache") == "miss"
    prefixed = wait_for_access(cache, "HEAD", f"/v2/up/library/{name}/manifests/v1")
    assert prefixed, cache.access_lines()
    assert prefixed[0].status == 200
    for blob in image.blobs:
        assert upstream_requests(upstream, "GET", f"/v2/library/{name}/blobs/{blob.digest}") == 1
