"""`portside sync` (registry/sync.py) from a real distribution behind htpasswd into a registry
in-process: the chosen repositories and tags arrive whole, and a second run fetches nothing."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.registry.sync import Sync
from portside.registry.tag_filter import TagFilter
from portside.server.app import create_app
from portside.storage.filesystem import FilesystemBlobStore

from .conftest import UpstreamFactory
from .registries import Distribution, PushedImage, digest_of, push_image


@dataclass
class Local:
    client: httpx.AsyncClient
    storage: FilesystemBlobStore
    metadata: SqlMetadataStore


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    """A registry in-process, and its stores as `portside sync` opens them beside it."""
    storage = tmp_path / "portside"
    storage.mkdir()
    upgrade(f"sqlite:///{storage / 'registry.db'}")
    app = create_app(Settings(storage_path=storage, workers=1))
    metadata = SqlMetadataStore(f"sqlite:///{storage / 'registry.db'}")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portside.test") as client:
        yield Local(client, FilesystemBlobStore(storage), metadata)
    await metadata.close()
    await app.state.registry.metadata.close()


def fetched(distribution: Distribution, kind: str) -> int:
    """GETs of manifests or blobs in the upstream's access log (HEADs aside)."""
    return len(re.findall(rf'"GET /v2/\S+/{kind}/\S+ HTTP', distribution.log_text()))


async def assert_pulls(client: httpx.AsyncClient, name: str, image: PushedImage) -> None:
    response = await client.get(f"/v2/{name}/manifests/{image.tag}")
    assert response.status_code == 200, response.text
    assert (response.content, response.headers["docker-content-digest"]) == (
        image.manifest,
        image.digest,
    )
    for content in (image.config, *image.layers):
        blob = await client.get(f"/v2/{name}/blobs/{digest_of(content)}")
        assert (blob.status_code, blob.content) == (200, content)


async def test_sync_copies_matching_tags_and_a_second_run_fetches_nothing(
    distribution_htpasswd: Distribution, make_upstream: UpstreamFactory, local: Local
) -> None:
    upstream_url = distribution_htpasswd.url
    team = f"sync-{secrets.token_hex(4)}"
    base = secrets.token_bytes(4096)
    with httpx.Client(base_url=upstream_url, auth=distribution_htpasswd.auth) as client:
        images = {
            (repository, tag): push_image(
                client, f"{team}/{repository}", tag, (base, secrets.token_bytes(512))
            )
            for repository in ("api", "web")
            for tag in ("1.2.0", "1.3.1", "2.0.0", "latest")
        }
        push_image(client, f"other-{team}/api", "1.2.0")
    username, password = distribution_htpasswd.auth or ("", "")
    upstream = make_upstream(upstream_url, username=username, password=password)
    run = Sync(upstream, local.storage, local.metadata, prefix="mirror/")
    names = await run.repositories([f"{team}/*"])
    assert names == [f"{team}/api", f"{team}/web"]

    report = await run.sync(names, TagFilter.parse((), ">=1.2,<2"))

    assert report.failures == []
    assert (report.repositories, report.tags, report.unchanged) == (2, 4, 0)
    assert report.blobs == 4 * 2 + 1  # each image's config and own layer; the base layer once
    for (repository, tag), image in images.items():
        name = f"mirror/{team}/{repository}"
        if tag in ("1.2.0", "1.3.1"):
            await assert_pulls(local.client, name, image)
        else:
            missing = await local.client.get(f"/v2/{name}/manifests/{tag}")
            assert missing.status_code == 404
    manifests, blobs = (
        fetched(distribution_htpasswd, "manifests"),
        fetched(distribution_htpasswd, "blobs"),
    )

    again = await run.sync(names, TagFilter.parse((), ">=1.2,<2"))

    assert (again.tags, again.unchanged, again.manifests, again.blobs) == (4, 4, 0, 0)
    assert fetched(distribution_htpasswd, "manifests") == manifests
    assert fetched(distribution_htpasswd, "blobs") == blobs


async def test_a_moved_tag_fetches_only_what_is_new(
    distribution_htpasswd: Distribution, make_upstream: UpstreamFactory, local: Local
) -> None:
    name = f"sync-{secrets.token_hex(4)}/app"
    base = secrets.token_bytes(2048)
    with httpx.Client(
        base_url=distribution_htpasswd.url, auth=distribution_htpasswd.auth
    ) as client:
        push_image(client, name, "stable", (base,))
        username, password = distribution_htpasswd.auth or ("", "")
        run = Sync(
            make_upstream(distribution_htpasswd.url, username=username, password=password),
            local.storage,
            local.metadata,
        )
        await run.sync([name], TagFilter.parse(("stable",), None))
        moved = push_image(client, name, "stable", (base, secrets.token_bytes(100)))

    report = await run.sync([name], TagFilter.parse(("stable",), None))

    assert (report.manifests, report.blobs) == (1, 2)  # the new config and layer, not the base
    await assert_pulls(local.client, name, moved)
