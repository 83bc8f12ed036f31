"""Garbage collection racing pushes: each window of registry/gc.py's argument played out step by
step (a push paused at one step while a collection runs, or a collection paused at one step
while a push runs), then pushes and deletes running during collections for real.

White-box: the pushes go through the registry's services over a metadata or blob store that
pauses at one call, and the collector's checkpoints let a push in between its steps.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from gc_helpers import GcRegistry, age, assert_pulls_intact, gc_registry, push_layers
from helpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Pushed,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    random_bytes,
    to_json,
)

import portside.metadata.blobs
import portside.registry.gc
from portside.metadata.base import Reservation
from portside.registry import keys
from portside.registry.errors import ManifestBlobUnknown
from portside.registry.gc import Summary
from portside.registry.manifest_store import ManifestStore
from portside.registry.names import Digest
from portside.registry.uploads import Uploads

__all__ = ["gc_registry"]  # the fixture, imported

# Every test on SQLite, and on PostgreSQL when PORTSIDE_TEST_POSTGRES_URL names one: there the
# collector and the pushes run their transactions at once, in threads.
pytestmark = pytest.mark.parametrize("gc_registry", ["sqlite", "postgresql"], indirect=True)


class Paused:
    """A store whose first call of one method waits, before it runs, until the test lets go."""

    def __init__(self, inner: Any, method: str) -> None:
        self._inner = inner
        self._method = method
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name != self._method or self.reached.is_set():
            return found

        async def paused(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.go.wait()
            return await found(*args, **kwargs)

        return paused


class Watched:
    """A metadata store that tells when a writer was told BUSY (a collector is deleting)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.busy = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def reserve_blob(self, digest: str, size: int, token: str) -> Reservation:
        found: Reservation = await self._inner.reserve_blob(digest, size, token)
        if found is Reservation.BUSY:
            self.busy.set()
        return found


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def until(event: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """Wait for event, failing at once if task ended without setting it."""
    waiting = asyncio.create_task(event.wait())
    await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
    if not event.is_set():
        waiting.cancel()
        await task  # raises what ended it
        pytest.fail("the task ended before the event")


def image(layers: list[bytes]) -> tuple[bytes, dict[str, bytes]]:
    """An image manifest's bytes over a fresh config and layers, and those blobs by digest."""
    config = to_json({"os": "linux", "nonce": random_bytes(8).hex()})
    document = image_manifest(
        descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer) for layer in layers]
    )
    return to_json(document), {digest_of(blob): blob for blob in [config, *layers]}


async def garbage_blob(registry: GcRegistry) -> bytes:
    """Bytes stored and recorded, but linked nowhere: garbage at the next collection."""
    data = random_bytes(256)
    digest = await push_blob(registry.client, "elsewhere", data)
    assert (await registry.client.delete(f"/v2/elsewhere/blobs/{digest}")).status_code == 202
    return data


# Windows of a push


async def test_a_manifest_whose_layers_are_collected_while_it_is_pushed_is_refused(
    gc_registry: GcRegistry,
) -> None:
    """Window: the push checked its references and stored its bytes; the collector unlinks and
    deletes the (still unreferenced) layers; the push records. It must fail, not record a
    manifest whose layers are gone; pushed again, it works."""
    client = gc_registry.client
    manifest, blobs = image([random_bytes(100)])
    for data in blobs.values():
        await push_blob(client, "app", data)
    paused = Paused(gc_registry.metadata, "put_manifest")
    push = asyncio.create_task(
        ManifestStore(gc_registry.storage, paused).put("app", "v1", OCI_MANIFEST, manifest)
    )
    await until(paused.reached, push)

    summary = await gc_registry.collect()
    paused.go.set()

    assert (summary.links, summary.blobs) == (2, 2)  # its own bytes are reserved: they stay
    with pytest.raises(ManifestBlobUnknown):
        await push
    assert (await client.get("/v2/app/manifests/v1")).status_code == 404
    for data in blobs.values():
        await push_blob(client, "app", data)
    response = await client.put(
        "/v2/app/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201
    await assert_pulls_intact(
        client, "app", "v1", Pushed(manifest, digest_of(manifest), OCI_MANIFEST, blobs)
    )


async def test_an_upload_of_a_stored_blob_keeps_it_from_the_collector(
    gc_registry: GcRegistry,
) -> None:
    """Window: the upload found the blob stored (and skipped writing it), the collector runs
    with the blob linked nowhere, then the upload links it."""
    data = await garbage_blob(gc_registry)
    paused = Paused(gc_registry.metadata, "link_blob")
    uploads = Uploads(gc_registry.storage, paused, None)
    upload = asyncio.create_task(
        uploads.upload("app", Digest.parse(digest_of(data)), body(data), None)
    )
    await until(paused.reached, upload)

    summary = await gc_registry.collect()
    paused.go.set()

    assert summary == Summary(links=0, blobs=0)  # reserved by the upload
    assert await upload == len(data)
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest_of(data)}")).content == data


@pytest.mark.parametrize(("store", "method"), [("storage", "move"), ("metadata", "link_blob")])
async def test_an_upload_whose_bytes_are_on_their_way_keeps_them_from_the_collector(
    gc_registry: GcRegistry, store: str, method: str
) -> None:
    """Window: the upload reserved a new digest and is moving its bytes into place (or has
    moved them and not recorded them yet) while the collector runs."""
    data = random_bytes(300)
    paused = Paused(getattr(gc_registry, store), method)
    storage = paused if store == "storage" else gc_registry.storage
    metadata = paused if store == "metadata" else gc_registry.metadata
    uploads = Uploads(storage, metadata, None)
    upload = asyncio.create_task(
        uploads.upload("app", Digest.parse(digest_of(data)), body(data), None)
    )
    await until(paused.reached, upload)

    assert await gc_registry.collect() == Summary()
    paused.go.set()

    assert await upload == len(data)
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest_of(data)}")).content == data


async def test_an_unreserved_upload_whose_bytes_were_collected_writes_them_again(
    gc_registry: GcRegistry,
) -> None:
    """Window: a whole small blob (its length known: recorded without a reservation) has been
    written and not recorded yet, and the collector, taking the bytes for an orphan, deletes
    them: the record fails, and the upload writes them again."""
    data = random_bytes(300)
    digest = digest_of(data)
    paused = Paused(gc_registry.metadata, "link_blob")
    uploads = Uploads(gc_registry.storage, paused, None)
    upload = asyncio.create_task(uploads.upload("app", Digest.parse(digest), body(data), len(data)))
    await until(paused.reached, upload)
    age(gc_registry.path(digest), 60)  # as if left by a writer that died

    summary = await gc_registry.collect()
    assert summary.orphans == 1
    assert not gc_registry.has_bytes(digest)
    paused.go.set()

    assert await upload == len(data)
    assert gc_registry.has_bytes(digest)
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest}")).content == data


async def test_an_unreserved_upload_of_a_stored_blob_collected_meanwhile_writes_it_again(
    gc_registry: GcRegistry,
) -> None:
    """Window: the upload found the blob stored (and wrote nothing), the collector deletes it,
    linked nowhere, before the upload links it: the record fails, and the upload writes the
    bytes after all."""
    data = await garbage_blob(gc_registry)
    digest = digest_of(data)
    paused = Paused(gc_registry.metadata, "link_blob")
    uploads = Uploads(gc_registry.storage, paused, None)
    upload = asyncio.create_task(uploads.upload("app", Digest.parse(digest), body(data), len(data)))
    await until(paused.reached, upload)

    summary = await gc_registry.collect()
    assert summary.blobs == 1  # no reservation kept it
    paused.go.set()

    assert await upload == len(data)
    assert gc_registry.has_bytes(digest)
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest}")).content == data


async def test_a_chunked_upload_finishing_while_the_collector_runs_keeps_its_blob(
    gc_registry: GcRegistry,
) -> None:
    data = random_bytes(1000)
    paused = Paused(gc_registry.metadata, "complete_upload")
    uploads = Uploads(gc_registry.storage, paused, None)
    started = await uploads.start("app")
    await uploads.append("app", started.id, body(data[:400]))
    finish = asyncio.create_task(
        uploads.finish("app", started.id, Digest.parse(digest_of(data)), body(data[400:]))
    )
    await until(paused.reached, finish)

    assert await gc_registry.collect() == Summary()
    paused.go.set()

    assert await finish == len(data)
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest_of(data)}")).content == data


# Windows of a collection


async def collecting_with(
    registry: GcRegistry, step: str, push: Callable[[], Awaitable[Any]], watched: Watched
) -> tuple[Summary, Any]:
    """Run a collection; at its first `step`, start push and hold the collection until the push
    has been told BUSY; then let both finish."""
    started: list[asyncio.Task[Any]] = []

    async def checkpoint(reached: str) -> None:
        if reached == step and not started:
            started.append(asyncio.create_task(push()))
            await until(watched.busy, started[0])

    summary = await registry.collector(checkpoint=checkpoint).collect()
    assert started, f"the collection never reached {step}"
    return summary, await started[0]


async def test_an_upload_of_a_blob_being_collected_waits_then_stores_its_own_bytes(
    gc_registry: GcRegistry,
) -> None:
    """Window: the collector marked the blob and is about to delete its bytes when an upload of
    the same digest arrives: the upload waits, then stores its bytes after the delete."""
    data = await garbage_blob(gc_registry)
    watched = Watched(gc_registry.metadata)
    uploads = Uploads(gc_registry.storage, watched, None)

    def push() -> Awaitable[int]:
        return uploads.upload("app", Digest.parse(digest_of(data)), body(data), None)

    summary, size = await collecting_with(gc_registry, "marked", push, watched)

    assert (summary.blobs, size) == (1, len(data))
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest_of(data)}")).content == data
    assert gc_registry.has_bytes(digest_of(data))


async def test_an_upload_of_bytes_claimed_as_orphans_waits_then_stores_its_own(
    gc_registry: GcRegistry,
) -> None:
    """Window: bytes without a record, claimed by the collector, which is about to delete them
    when an upload of the same digest arrives."""
    data = random_bytes(200)
    digest = digest_of(data)
    await gc_registry.storage.put(keys.blob(Digest.parse(digest)), data)
    age(gc_registry.path(digest), 60)
    watched = Watched(gc_registry.metadata)
    uploads = Uploads(gc_registry.storage, watched, None)

    def push() -> Awaitable[int]:
        return uploads.upload("app", Digest.parse(digest), body(data), None)

    summary, _ = await collecting_with(gc_registry, "claimed", push, watched)

    assert summary.orphans == 1
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest}")).content == data


async def test_a_manifest_pushed_while_its_blob_is_being_collected_stores_its_bytes_again(
    gc_registry: GcRegistry,
) -> None:
    """Window: a manifest deleted by digest is being collected (its bytes marked) when a client
    pushes it again."""
    client = gc_registry.client
    pushed = await push_layers(client, "app", "v1", [random_bytes(64)])
    # A twin over the same config and layer keeps them in use.
    twin = to_json({**json.loads(pushed.body), "annotations": {"twin": "yes"}})
    response = await client.put(
        "/v2/app/manifests/v2", content=twin, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201
    await client.delete(f"/v2/app/manifests/{pushed.digest}")
    watched = Watched(gc_registry.metadata)
    manifests = ManifestStore(gc_registry.storage, watched)

    def push() -> Awaitable[Any]:
        return manifests.put("app", "v1", OCI_MANIFEST, pushed.body)

    async def checkpoint(step: str) -> None:
        if step == "marked" and not started:
            started.append(asyncio.create_task(push()))
            await until(watched.busy, started[0])

    started: list[asyncio.Task[Any]] = []
    summary = await gc_registry.collector(checkpoint=checkpoint).collect()
    await started[0]

    assert summary.blobs == 1
    await assert_pulls_intact(client, "app", "v1", pushed)


# Manifests under `gc_untagged: collect`


async def test_an_index_whose_untagged_child_is_collected_while_it_is_pushed_is_refused(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    child = await push_layers(client, "app", None, [random_bytes(50)])
    index = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child.descriptor()]})
    paused = Paused(gc_registry.metadata, "put_manifest")
    push = asyncio.create_task(
        ManifestStore(gc_registry.storage, paused).put("app", "multi", OCI_INDEX, index)
    )
    await until(paused.reached, push)

    summary = await gc_registry.collect(untagged="collect")
    paused.go.set()

    assert summary.manifests == 1
    with pytest.raises(ManifestBlobUnknown):
        await push
    assert (await client.get("/v2/app/manifests/multi")).status_code == 404


async def test_a_tag_pushed_onto_a_manifest_being_collected_is_refused_or_kept_whole(
    gc_registry: GcRegistry,
) -> None:
    """The collector deletes an untagged manifest (and its layers) while a client tags it: the
    tag must not end up naming a manifest that is gone, or one whose layers are."""
    client = gc_registry.client
    untagged = await push_layers(client, "app", None, [random_bytes(70)])
    paused = Paused(gc_registry.metadata, "put_manifest")
    tag = asyncio.create_task(
        ManifestStore(gc_registry.storage, paused).put("app", "v1", OCI_MANIFEST, untagged.body)
    )
    await until(paused.reached, tag)

    summary = await gc_registry.collect(untagged="collect")
    paused.go.set()

    assert summary.manifests == 1
    with pytest.raises(ManifestBlobUnknown):
        await tag
    assert (await client.get("/v2/app/tags/list")).json()["tags"] == []


async def test_a_tag_pushed_before_the_collection_keeps_the_manifest(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    untagged = await push_layers(client, "app", None, [random_bytes(70)])
    response = await client.put(
        "/v2/app/manifests/v1", content=untagged.body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 201

    assert await gc_registry.collect(untagged="collect") == Summary()
    await assert_pulls_intact(client, "app", "v1", untagged)


# A collector that died, or was too slow


async def test_a_writer_takes_over_a_blob_whose_collector_died_after_marking_it(
    gc_registry: GcRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = await garbage_blob(gc_registry)
    digest = digest_of(data)
    from datetime import UTC, datetime, timedelta

    future = datetime.now(UTC) + timedelta(hours=1)
    assert await gc_registry.metadata.mark_blobs([digest], future, "dead") == {digest: len(data)}
    monkeypatch.setattr(portside.metadata.blobs, "MARK_TTL", timedelta(0))  # the mark is stale

    assert await push_blob(gc_registry.client, "app", data) == digest
    await gc_registry.metadata.forget_blobs([digest], "dead")  # the dead collector, back: no-op

    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest}")).content == data


async def test_a_collector_deletes_no_bytes_once_its_marks_may_be_stale(
    gc_registry: GcRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    data = await garbage_blob(gc_registry)
    monkeypatch.setattr(portside.registry.gc, "MARK_TTL", timedelta(0))

    summary = await gc_registry.collect()

    assert summary.blobs == 0
    assert gc_registry.has_bytes(digest_of(data))


# Pushes and deletes during collections, for real


async def push_image_or_none(
    client: httpx.AsyncClient, name: str, tag: str, layers: list[bytes]
) -> Pushed | None:
    """Push an image; None if the registry refused its manifest (MANIFEST_BLOB_UNKNOWN: a
    collection took a layer between its upload and the manifest), as a client would retry."""
    manifest, blobs = image(layers)
    for data in blobs.values():
        await push_blob(client, name, data)
    response = await client.put(
        f"/v2/{name}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    if response.status_code == 404:
        assert response.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        return None
    assert response.status_code == 201, response.text
    return Pushed(manifest, digest_of(manifest), OCI_MANIFEST, blobs)


@pytest.mark.parametrize("untagged", ["keep", "collect"])
async def test_pushes_and_deletes_during_collections_leave_every_tagged_image_intact(
    gc_registry: GcRegistry, untagged: str
) -> None:
    client = gc_registry.client
    base = random_bytes(4096)  # in every image: its links come and go
    kept: dict[tuple[str, str], Pushed] = {}
    deleted: list[Pushed] = []
    pushing = True

    async def pusher(n: int) -> None:
        for round_ in range(6):
            name, tag = f"team/app{n % 3}", f"v{n}-{round_}"
            layers = [base, os.urandom(512)]
            for _ in range(100):  # as a client retries a push the registry refused
                if (pushed := await push_image_or_none(client, name, tag, layers)) is not None:
                    break
            else:
                pytest.fail("a push failed 100 times in a row")
            if round_ % 3 == 1:
                assert (
                    await client.delete(f"/v2/{name}/manifests/{pushed.digest}")
                ).status_code == 202
                deleted.append(pushed)
            elif round_ % 3 == 2:  # untagged: collected under `collect`
                assert (await client.delete(f"/v2/{name}/manifests/{tag}")).status_code == 202
                if untagged == "collect":
                    deleted.append(pushed)
            else:
                kept[(name, tag)] = pushed

    async def collector() -> int:
        runs = 0
        while pushing:
            await gc_registry.collect(untagged=untagged)
            runs += 1
            # With no grace period, a collection unlinks the blobs of every push in flight:
            # one after another, they would starve the pushes.
            await asyncio.sleep(random.uniform(0.02, 0.1))
        return runs

    collecting = asyncio.create_task(collector())
    await asyncio.gather(*(pusher(n) for n in range(6)))
    pushing = False
    assert await collecting > 1
    await gc_registry.collect(untagged=untagged)

    for (name, tag), pushed in kept.items():
        await assert_pulls_intact(client, name, tag, pushed)
    for pushed in deleted:
        assert not gc_registry.has_bytes(pushed.digest)
        for digest, data in pushed.blobs.items():
            assert data == base or not gc_registry.has_bytes(digest)
    assert gc_registry.has_bytes(digest_of(base))
