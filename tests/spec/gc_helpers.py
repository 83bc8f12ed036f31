"""Building blocks for the garbage collection tests: a registry in-process with a collector on
the side, as `portside gc` would run next to the server, and looks into its storage folder.

A library, like helpers.py, so no test_ prefix.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    Pushed,
    descriptor,
    image_manifest,
    push_blob,
    push_manifest,
    random_bytes,
    to_json,
)

from portside.config.settings import Settings
from portside.metadata.base import MetadataStore
from portside.registry import keys
from portside.registry.gc import Checkpoint, Collector, Policy, Summary
from portside.registry.names import Digest
from portside.server.app import create_app
from portside.storage.filesystem import FilesystemBlobStore
from postgres import schema

NO_GRACE = timedelta(0)


@dataclass
class GcRegistry:
    """A registry app, an HTTP client on it, and its stores as a collector sees them."""

    client: httpx.AsyncClient
    settings: Settings
    storage: FilesystemBlobStore
    metadata: MetadataStore

    def collector(
        self,
        grace_period: timedelta = NO_GRACE,
        untagged: str = "keep",
        upload_expiry: timedelta = timedelta(hours=24),
        checkpoint: Checkpoint | None = None,
    ) -> Collector:
        assert untagged in ("keep", "collect")
        policy = Policy(grace_period, "keep" if untagged == "keep" else "collect", upload_expiry)
        if checkpoint is None:
            return Collector(self.storage, self.metadata, policy)
        return Collector(self.storage, self.metadata, policy, checkpoint)

    async def collect(self, dry_run: bool = False, **policy: Any) -> Summary:
        return await self.collector(**policy).collect(dry_run=dry_run)

    def path(self, digest: str) -> Path:
        return Path(self.settings.storage_path) / keys.blob(Digest.parse(digest))

    def has_bytes(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def files(self) -> set[str]:
        """Every object under the storage folder, the database aside."""
        root = Path(self.settings.storage_path)
        return {
            str(path.relative_to(root))
            for folder in ("blobs", "uploads")
            for path in (root / folder).rglob("*")
            if path.is_file()
        }


def age(path: Path, seconds: float) -> None:
    """Make a file look written seconds ago."""
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


async def assert_pulls_intact(
    client: httpx.AsyncClient, name: str, ref: str, pushed: Pushed
) -> None:
    """The manifest by ref, and every blob it was pushed with, read back byte for byte."""
    response = await client.get(
        f"/v2/{name}/manifests/{ref}", headers={"Accept": pushed.media_type}
    )
    assert response.status_code == 200, response.text
    assert response.content == pushed.body
    for digest, data in pushed.blobs.items():
        blob = await client.get(f"/v2/{name}/blobs/{digest}")
        assert blob.status_code == 200, (digest, blob.text)
        assert blob.content == data


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[GcRegistry]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield GcRegistry(
            client,
            settings,
            FilesystemBlobStore(Path(settings.storage_path)),
            app.state.registry.metadata,
        )
    await app.state.registry.metadata.close()


@pytest.fixture(params=["sqlite"])
async def gc_registry(
    request: pytest.FixtureRequest, make_settings: Any
) -> AsyncIterator[GcRegistry]:
    """A registry on SQLite; a test that parametrizes gc_registry with "postgresql" gets one on
    the PostgreSQL that PORTSIDE_TEST_POSTGRES_URL names, in a schema of its own."""
    if request.param == "sqlite":
        async with running(make_settings()) as registry:
            yield registry
        return
    server = os.environ.get("PORTSIDE_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("PORTSIDE_TEST_POSTGRES_URL is not set; scripts/postgres-test-cluster")
    with schema(server, migrated=True) as url:
        async with running(make_settings(database_url=url)) as registry:
            yield registry


async def push_layers(
    client: httpx.AsyncClient, name: str, tag: str | None, layers: list[bytes]
) -> Pushed:
    """An image of a fresh config and the given layers (shared with other images, say)."""
    config = to_json({"architecture": "amd64", "os": "linux", "nonce": random_bytes(8).hex()})
    blobs = {await push_blob(client, name, config): config}
    for layer in layers:
        blobs[await push_blob(client, name, layer)] = layer
    document = image_manifest(
        descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer) for layer in layers]
    )
    return await push_manifest(client, name, tag, document, blobs)
