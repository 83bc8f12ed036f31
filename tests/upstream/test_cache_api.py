"""The pull-through cache through the registry API, in-process, in front of a real distribution on
loopback: what is fetched and when, what is kept, what is refused, what a failing upstream leaves.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from e2e.server import PortsideServer
from portside.auth.htpasswd import add_user
from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.registry.gc import Collector, Policy
from portside.server.app import create_app

from .conftest import PULLER, pusher_client
from .registries import (
    Distribution,
    PushedImage,
    digest_of,
    push_blob,
    push_image,
    running_distribution,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = {"Accept": OCI_MANIFEST}

CacheFactory = Callable[..., Any]


@pytest.fixture
def upstream_client(distribution: Distribution) -> httpx.Client:
    return httpx.Client(base_url=distribution.url, timeout=30)


def unique(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


@pytest.fixture
async def make_cache(tmp_path: Path) -> AsyncIterator[CacheFactory]:
    """make_cache(mirroring, **settings): a client of an in-process Portside with that
    `mirroring` section, its app running (lifespan) so that its upstream clients close."""
    clients: list[tuple[httpx.AsyncClient, Starlette]] = []
    count = 0

    async def make(mirroring: dict[str, Any], **overrides: Any) -> httpx.AsyncClient:
        nonlocal count
        count += 1
        storage = tmp_path / f"registry-{count}"
        storage.mkdir()
        upgrade(f"sqlite:///{storage / 'registry.db'}")
        settings = Settings(storage_path=storage, workers=1, mirroring=mirroring, **overrides)
        app = create_app(settings)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://cache.test", timeout=30
        )
        clients.append((client, app))
        return client

    yield make
    for client, app in clients:
        await client.aclose()
        mirror = app.state.registry.mirror
        if mirror is not None:
            await mirror.close()


def upstream_gets(distribution: Distribution, path: str) -> int:
    """How many GETs of path the upstream's access log shows."""
    return len(re.findall(rf'"GET {re.escape(path)} HTTP', distribution.log_text()))


async def pull(client: httpx.AsyncClient, name: str, reference: str) -> httpx.Response:
    response = await client.get(f"/v2/{name}/manifests/{reference}", headers=ACCEPT)
    assert response.status_code == 200, response.text
    return response


async def pull_image(client: httpx.AsyncClient, name: str, image: PushedImage) -> None:
    """The whole image: manifest by tag, then the config and every layer, all as pushed."""
    response = await pull(client, name, image.tag)
    assert response.content == image.manifest
    assert response.headers["docker-content-digest"] == image.digest
    for content in (image.config, *image.layers):
        blob = await client.get(f"/v2/{name}/blobs/{digest_of(content)}")
        assert blob.status_code == 200, blob.text
        assert blob.content == content
        # A response that followed the fetch ends with its last byte, before the blob is
        # stored; a HEAD answers once it is held here.
        held = await client.head(f"/v2/{name}/blobs/{digest_of(content)}")
        assert held.status_code == 200


async def test_a_prefixed_upstream_is_pulled_through_and_kept(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    repository = unique("cache/app")
    image = push_image(upstream_client, repository, "v1", (secrets.token_bytes(300_000),))
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})

    await pull_image(cache, f"up/{repository}", image)
    await pull_image(cache, f"up/{repository}", image)
    by_digest = await pull(cache, f"up/{repository}", image.digest)

    assert by_digest.content == image.manifest
    for content in (image.config, *image.layers):
        assert upstream_gets(distribution, f"/v2/{repository}/blobs/{digest_of(content)}") == 1
    assert upstream_gets(distribution, f"/v2/{repository}/manifests/v1") == 1
    tags = await cache.get(f"/v2/up/{repository}/tags/list")
    assert tags.json()["tags"] == ["v1"]


async def test_a_head_fetches_what_it_says_is_there(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    """A client that sees a blob with HEAD will not push it: it must be readable here then."""
    repository = unique("cache/head")
    image = push_image(upstream_client, repository, "v1")
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    layer = image.layer_digests[0]

    manifest = await cache.head(f"/v2/up/{repository}/manifests/v1", headers=ACCEPT)
    blob = await cache.head(f"/v2/up/{repository}/blobs/{layer}")

    assert manifest.status_code == 200
    assert manifest.headers["docker-content-digest"] == image.digest
    assert blob.status_code == 200
    assert int(blob.headers["content-length"]) == len(image.layers[0])
    assert (await cache.get(f"/v2/up/{repository}/blobs/{layer}")).content == image.layers[0]


async def test_unknown_names_and_digests_are_the_specs_404s(
    make_cache: CacheFactory, distribution: Distribution
) -> None:
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    missing = digest_of(b"never pushed")

    manifest = await cache.get("/v2/up/no/such/manifests/v1", headers=ACCEPT)
    blob = await cache.get(f"/v2/up/no/such/blobs/{missing}")

    assert manifest.status_code == 404
    assert manifest.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert blob.status_code == 404
    assert blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_twenty_concurrent_pulls_of_an_uncached_blob_fetch_it_once(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    repository = unique("cache/many")
    layer = secrets.token_bytes(8 * 1024 * 1024)
    image = push_image(upstream_client, repository, "v1", (layer,))
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    path = f"/v2/up/{repository}/blobs/{digest_of(layer)}"

    answers = await asyncio.gather(*(cache.get(path) for _ in range(20)))

    assert all(answer.status_code == 200 for answer in answers)
    assert all(answer.content == layer for answer in answers)
    assert upstream_gets(distribution, f"/v2/{repository}/blobs/{image.layer_digests[0]}") == 1


async def test_a_push_into_a_cached_namespace_is_denied_and_beside_it_works(
    make_cache: CacheFactory, distribution: Distribution
) -> None:
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})

    refused = await cache.post("/v2/up/mine/blobs/uploads/")
    manifest = await cache.put(
        "/v2/up/mine/manifests/v1", content=b"{}", headers={"Content-Type": OCI_MANIFEST}
    )
    beside = await cache.post("/v2/team/mine/blobs/uploads/")

    for answer in (refused, manifest):
        assert answer.status_code == 403, answer.text
        error = answer.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert "pull-through cache" in error["detail"]["reason"]
    assert beside.status_code == 202


async def test_the_root_upstream_serves_names_not_stored_here_and_pushes_stay_local(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    """The classic `mirroring.source`, as docker's registry-mirrors uses it: unprefixed names;
    what is pushed here is served from here first."""
    repository = unique("root/app")
    image = push_image(upstream_client, repository, "v1")
    cache = await make_cache({"source": distribution.url})
    local_name = unique("root/local")

    await pull_image(cache, repository, image)
    pushed = await _push_local(cache, local_name)

    assert (await pull(cache, local_name, "v1")).headers["docker-content-digest"] == pushed
    assert upstream_gets(distribution, f"/v2/{local_name}/manifests/v1") == 0


async def test_ns_names_the_upstream_a_request_is_for(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    """containerd and podman, configured with a mirror, send ?ns=<registry> and the name as the
    upstream knows it."""
    repository = unique("ns/app")
    image = push_image(upstream_client, repository, "v1")
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    host = distribution.url.removeprefix("http://")

    response = await cache.get(
        f"/v2/{repository}/manifests/v1", params={"ns": host}, headers=ACCEPT
    )
    other = await cache.get(
        f"/v2/{repository}/manifests/v1", params={"ns": "elsewhere.example"}, headers=ACCEPT
    )

    assert response.status_code == 200
    assert response.headers["docker-content-digest"] == image.digest
    assert (await pull(cache, f"up/{repository}", "v1")).content == image.manifest
    assert other.status_code == 404  # not an upstream's name: this registry's own, not here


@pytest.mark.parametrize(
    ("ns", "status"),
    [
        ("&ns=a&ns=b", 400),  # which one? neither
        ("&ns=", 404),  # no registry named: this registry's own, which has no such name
        ("&ns=%00", 404),
        ("&ns=%ED%A0%80", 404),
        ("&ns=" + "x" * 5000, 404),
    ],
)
async def test_ns_given_wrong_is_a_4xx(
    make_cache: CacheFactory, distribution: Distribution, ns: str, status: int
) -> None:
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})

    response = await cache.get(f"/v2/no/such/manifests/v1?x=1{ns}", headers=ACCEPT)

    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["code"]


async def test_a_tag_moved_upstream_is_seen_after_its_time_to_live_and_not_before(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    repository = unique("ttl/app")
    first = push_image(upstream_client, repository, "v1")
    fresh = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    expiring = await make_cache(
        {"upstreams": {"up": {"url": distribution.url, "tags_cache_ttl": "1s"}}}
    )
    for cache in (fresh, expiring):
        await pull(cache, f"up/{repository}", "v1")
    second = push_image(upstream_client, repository, "v1")
    await asyncio.sleep(1.1)

    kept = await pull(fresh, f"up/{repository}", "v1")
    moved = await pull(expiring, f"up/{repository}", "v1")

    assert kept.headers["docker-content-digest"] == first.digest
    assert moved.headers["docker-content-digest"] == second.digest


async def test_a_down_upstream_leaves_cached_tags_pulling_and_fails_the_rest_quickly(
    make_cache: CacheFactory, tmp_path: Path
) -> None:
    with running_distribution(tmp_path / "upstream") as upstream:
        client = httpx.Client(base_url=upstream.url, timeout=30)
        image = push_image(client, "down/app", "v1")
        push_image(client, "down/other", "v1")
        cache = await make_cache(
            {
                "upstreams": {"up": {"url": upstream.url, "tags_cache_ttl": "1s"}},
                "connect_timeout": "2s",
                "read_timeout": "2s",
            }
        )
        await pull_image(cache, "up/down/app", image)
    await asyncio.sleep(1.1)  # the tag's time to live is over: it would be checked upstream

    started = asyncio.get_running_loop().time()
    cached = await pull(cache, "up/down/app", "v1")
    uncached = await cache.get("/v2/up/down/other/manifests/v1", headers=ACCEPT)
    took = asyncio.get_running_loop().time() - started

    assert cached.content == image.manifest
    assert (await cache.get(f"/v2/up/down/app/blobs/{image.layer_digests[0]}")).status_code == 200
    assert uncached.status_code == 503
    assert uncached.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert took < 10


async def test_a_blob_stored_for_another_repository_is_not_linked_unless_the_upstream_has_it(
    make_cache: CacheFactory, distribution: Distribution
) -> None:
    """Knowing a digest of a private repository must not make it readable through a cache
    name: the upstream is asked whether its repository has the blob."""
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    secret = secrets.token_bytes(2048)
    digest = await _push_blob_async(cache, "private/app", secret)

    through_cache = await cache.get(f"/v2/up/{unique('any/name')}/blobs/{digest}")

    assert through_cache.status_code == 404
    assert through_cache.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_cached_manifests_not_pulled_for_a_while_are_expired(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    repository = unique("expire/app")
    image = push_image(upstream_client, repository, "v1")
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    await pull_image(cache, f"up/{repository}", image)
    registry = cache._transport.app.state.registry  # type: ignore[attr-defined]

    def collector(keep: timedelta) -> Collector:
        policy = Policy(grace_period=timedelta(0), cache_keep=keep)
        return Collector(registry.blobs._storage, registry.metadata, policy)

    assert (await collector(timedelta(days=1)).collect()).cached == 0
    assert (await collector(timedelta(0)).collect(dry_run=True)).cached == 1
    summary = await collector(timedelta(0)).collect()
    assert summary.cached == 1
    assert summary.blobs == 3  # the manifest, its config and its layer: nothing else held them

    assert await registry.metadata.get_manifest(f"up/{repository}", "v1") is None
    # Pulled again, it comes back from the upstream.
    assert (await pull(cache, f"up/{repository}", "v1")).content == image.manifest


async def _push_local(cache: httpx.AsyncClient, name: str, layers: tuple[bytes, ...] = ()) -> str:
    """An image pushed to this registry itself, tagged v1; its digest."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    descriptors = []
    for content in (config, *layers):
        descriptors.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": await _push_blob_async(cache, name, content),
                "size": len(content),
            }
        )
    config_descriptor = descriptors[0] | {"mediaType": "application/vnd.oci.image.config.v1+json"}
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_descriptor,
        "layers": descriptors[1:],
    }
    manifest = json.dumps(document).encode()
    answer = await cache.put(
        f"/v2/{name}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert answer.status_code == 201, answer.text
    return digest_of(manifest)


async def _push_blob_async(cache: httpx.AsyncClient, name: str, content: bytes) -> str:
    digest = digest_of(content)
    answer = await cache.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=content
    )
    assert answer.status_code == 201, answer.text
    return digest


async def test_expiring_a_cached_image_keeps_the_blobs_a_local_image_shares(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    """distribution's proxy TTL deletes blobs other images still use (distribution#4191)."""
    repository = unique("expire/shared")
    shared = secrets.token_bytes(4096)
    image = push_image(upstream_client, repository, "v1", (shared,))
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    await pull_image(cache, f"up/{repository}", image)
    await _push_local(cache, "team/local", layers=(shared,))  # an image of the same layer
    registry = cache._transport.app.state.registry  # type: ignore[attr-defined]
    policy = Policy(grace_period=timedelta(0), cache_keep=timedelta(0))

    summary = await Collector(registry.blobs._storage, registry.metadata, policy).collect()

    assert summary.cached == 1
    layer = await cache.get(f"/v2/team/local/blobs/{digest_of(shared)}")
    assert layer.status_code == 200
    assert layer.content == shared


async def test_an_upstream_behind_a_token_service_and_its_referrers_come_through(
    make_cache: CacheFactory, portside_token: PortsideServer
) -> None:
    """Another Portside with its token service: the cache logs in with its credentials, and
    the referrers API is passed through, so signatures and SBOMs come along."""
    repository = unique("signed/app")
    with pusher_client(portside_token, repository) as client:
        image = push_image(client, repository, "v1")
        signature = _artifact_referring_to(client, repository, image)
    cache = await make_cache(
        {
            "upstreams": {
                "tok": {"url": portside_token.url, "username": PULLER[0], "password": PULLER[1]}
            }
        }
    )

    await pull_image(cache, f"tok/{repository}", image)
    listed = await cache.get(f"/v2/tok/{repository}/referrers/{image.digest}")
    fetched = await pull(cache, f"tok/{repository}", signature)

    assert listed.status_code == 200
    assert [d["digest"] for d in listed.json()["manifests"]] == [signature]
    assert fetched.headers["docker-content-digest"] == signature


def _artifact_referring_to(client: httpx.Client, repository: str, subject: PushedImage) -> str:
    """A signature-like artifact whose subject is the image; its digest."""
    empty = b"{}"
    push_blob(client, repository, empty)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": digest_of(empty),
            "size": len(empty),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": digest_of(empty),
                "size": len(empty),
            }
        ],
        "subject": {
            "mediaType": OCI_MANIFEST,
            "digest": subject.digest,
            "size": len(subject.manifest),
        },
    }
    manifest = json.dumps(document).encode()
    answer = client.put(
        f"/v2/{repository}/manifests/{digest_of(manifest)}",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert answer.status_code == 201, answer.text
    return digest_of(manifest)


async def test_permissions_decide_who_pulls_through_the_cache(
    make_cache: CacheFactory,
    distribution: Distribution,
    upstream_client: httpx.Client,
    tmp_path: Path,
) -> None:
    """Cached names are names like any: anonymous pull of hub/* lets anyone through, and a
    namespace nobody was granted is refused before the upstream is asked."""
    repository = unique("perm/app")
    image = push_image(upstream_client, repository, "v1")
    htpasswd = tmp_path / "htpasswd"
    add_user(htpasswd, "alice", "alice-Secret-1", rounds=4)
    auth = {
        "htpasswd": {"path": str(htpasswd)},
        "access": {"anonymous_pull": ["open/*"], "user_namespaces": True},
    }
    upstreams = {"open": {"url": distribution.url}, "shut": {"url": distribution.url}}
    mirroring = {"upstreams": upstreams}
    cache = await make_cache(mirroring, auth=auth)

    anonymous = await cache.get(f"/v2/open/{repository}/manifests/v1", headers=ACCEPT)
    refused = await cache.get(f"/v2/shut/{repository}/manifests/v1", headers=ACCEPT)
    alice = await cache.get(
        f"/v2/shut/{repository}/manifests/v1", headers=ACCEPT, auth=("alice", "alice-Secret-1")
    )

    assert anonymous.status_code == 200
    assert anonymous.content == image.manifest
    assert refused.status_code == 401
    assert alice.status_code == 403
    assert upstream_gets(distribution, f"/v2/{repository}/manifests/v1") == 1


async def test_the_tags_of_a_cached_repository_are_the_upstreams(
    make_cache: CacheFactory, distribution: Distribution, upstream_client: httpx.Client
) -> None:
    """A cache lists what it can serve, not only what it holds; paged as the spec says."""
    repository = unique("tags/app")
    push_image(upstream_client, repository, "v1")
    push_image(upstream_client, repository, "v2")
    cache = await make_cache({"upstreams": {"up": {"url": distribution.url}}})
    await pull(cache, f"up/{repository}", "v1")

    listed = await cache.get(f"/v2/up/{repository}/tags/list")
    first = await cache.get(f"/v2/up/{repository}/tags/list", params={"n": 1})
    unknown = await cache.get("/v2/up/no/such/repository/tags/list")

    assert listed.json() == {"name": f"up/{repository}", "tags": ["v1", "v2"]}
    assert first.json()["tags"] == ["v1"]
    assert "last=v1" in first.headers["link"]
    assert unknown.status_code == 404
