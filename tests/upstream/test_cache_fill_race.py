"""The pull-through cache's fills across processes, with the interleavings set by hand: two Mirrors
on one storage folder and one metadata database are two workers of one registry.

Found by tests/e2e/test_e2e_cache.py (twenty concurrent pulls over two workers fetched a 200 MiB
blob twice, or the waiting worker's requests each sent the upstream a GET after the fill).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.registry.manifest_store import ManifestStore
from portside.registry.mirror import Mirror, UpstreamRoute
from portside.registry.names import Digest
from portside.storage.filesystem import FilesystemBlobStore

from .conftest import UpstreamFactory
from .registries import Distribution, digest_of, push_image


class Interleaved:
    """A metadata store whose blob_size answers, on its nth call, only after `meanwhile` ran:
    what another process did between this one's look and its next step."""

    def __init__(self, inner: SqlMetadataStore, nth: int, meanwhile: Callable[[], Awaitable[Any]]):
        self._inner = inner
        self._calls = 0
        self._nth = nth
        self._meanwhile = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def blob_size(self, digest: str) -> int | None:
        size = await self._inner.blob_size(digest)
        self._calls += 1
        if self._calls == self._nth:
            await self._meanwhile()
        return size


@pytest.fixture
async def stores(
    tmp_path: Path,
) -> AsyncIterator[tuple[FilesystemBlobStore, list[SqlMetadataStore]]]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(url)
    opened = [SqlMetadataStore(url), SqlMetadataStore(url)]
    yield FilesystemBlobStore(tmp_path), opened
    for metadata in opened:
        await metadata.close()


def upstream_gets(distribution: Distribution, path: str) -> int:
    return len(re.findall(rf'"GET {re.escape(path)} HTTP', distribution.log_text()))


@pytest.mark.parametrize("nth", [1, 2], ids=["before-its-fill", "before-the-lease"])
async def test_a_worker_that_looked_before_another_stored_the_blob_does_not_fetch_it_again(
    stores: tuple[FilesystemBlobStore, list[SqlMetadataStore]],
    distribution: Distribution,
    make_upstream: UpstreamFactory,
    nth: int,
) -> None:
    """Worker B looks (the blob is not stored), then worker A fetches and stores it and lets go of
    the fill's lease, then B goes on: it finds the blob stored and linked, with no request to
    the upstream. nth=1: B's first look, before its fill began (it used to check the upstream
    with a GET); nth=2: the look in its fill, before it takes the lease (it used to fetch the
    whole blob again)."""
    repository = f"race/app-{secrets.token_hex(3)}"
    layer = secrets.token_bytes(256 * 1024)
    with httpx.Client(base_url=distribution.url, timeout=30) as client:
        push_image(client, repository, "v1", (layer,))
    digest = Digest.parse(digest_of(layer))
    name = f"up/{repository}"
    storage, (metadata_a, metadata_b) = stores

    def mount(metadata: Any) -> UpstreamRoute:
        upstream = make_upstream(distribution.url)
        return UpstreamRoute("up", upstream, merged=False, ttl=timedelta(days=1))

    worker_a = Mirror(storage, metadata_a, [mount(metadata_a)], ManifestStore(storage, metadata_a))

    async def a_fills() -> None:
        route = worker_a.route(name)
        assert route is not None
        assert await worker_a.blob_size(route, name, digest) == len(layer)

    interleaved = Interleaved(metadata_b, nth, a_fills)
    manifests_b = ManifestStore(storage, interleaved)  # type: ignore[arg-type]
    worker_b = Mirror(storage, interleaved, [mount(interleaved)], manifests_b)  # type: ignore[arg-type]
    route_b = worker_b.route(name)
    assert route_b is not None

    assert await worker_b.open_blob(route_b, name, digest) is None  # stored: read it from there

    assert upstream_gets(distribution, f"/v2/{repository}/blobs/{digest}") == 1
    assert await metadata_b.linked_blob_size(name, str(digest)) == len(layer)
