"""Garbage collection (registry/gc.py) on a registry in-process: push, delete, collect, and check
what pulls and what is left in the storage folder. Not in the OCI spec, which leaves it to the
registry; distribution's `garbage-collect` is the model, online and with a grace period."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from gc_helpers import GcRegistry, age, assert_pulls_intact, gc_registry, push_layers
from helpers import (
    assert_error,
    digest_of,
    push_artifact,
    push_blob,
    push_index,
    random_bytes,
    start_upload,
)
from sqlalchemy import create_engine, insert

from portside.metadata.tables import tags
from portside.registry import keys
from portside.registry.gc import CollectionRunning, Summary
from portside.registry.names import Digest

__all__ = ["gc_registry"]  # the fixture, imported

# On SQLite, and on PostgreSQL when PORTSIDE_TEST_POSTGRES_URL names one.
pytestmark = pytest.mark.parametrize("gc_registry", ["sqlite", "postgresql"], indirect=True)

HOUR = timedelta(hours=1)
SIGNATURE = "application/vnd.example.signature"


def sizes(*blobs: bytes) -> int:
    return sum(len(blob) for blob in blobs)


async def test_deleted_image_goes_and_the_tagged_one_pulls_intact(gc_registry: GcRegistry) -> None:
    client = gc_registry.client
    shared, a_only, b_only = random_bytes(300), random_bytes(200), random_bytes(100)
    a = await push_layers(client, "app", "a", [shared, a_only])
    b = await push_layers(client, "app", "b", [shared, b_only])
    assert (await client.delete(f"/v2/app/manifests/{b.digest}")).status_code == 202

    summary = await gc_registry.collect()

    b_config = next(data for digest, data in b.blobs.items() if data not in (shared, b_only))
    assert summary == Summary(
        links=2,  # b's config and its own layer; the shared layer is a's too
        blobs=3,  # those two, and b's manifest
        blob_bytes=sizes(b.body, b_config, b_only),
    )
    await assert_pulls_intact(client, "app", "a", a)
    for digest in (b.digest, digest_of(b_config), digest_of(b_only)):
        assert not gc_registry.has_bytes(digest)
    for digest in (a.digest, *a.blobs):
        assert gc_registry.has_bytes(digest)
    assert_error(await client.get(f"/v2/app/blobs/{digest_of(b_only)}"), 404, "BLOB_UNKNOWN")
    assert await gc_registry.collect() == Summary()  # nothing left to collect


async def test_a_dry_run_changes_nothing_and_says_what_a_run_removes(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    kept = await push_layers(client, "app", "kept", [random_bytes(50)])
    gone = await push_layers(client, "app", "gone", [random_bytes(60)])
    await client.delete(f"/v2/app/manifests/{gone.digest}")
    await push_blob(client, "app", random_bytes(70))  # pushed, never referenced
    files = gc_registry.files()

    would = await gc_registry.collect(dry_run=True)

    assert gc_registry.files() == files
    for digest, data in gone.blobs.items():
        assert (await client.get(f"/v2/app/blobs/{digest}")).content == data
    assert would.links == 3
    assert would.blobs == 4
    assert await gc_registry.collect() == would
    await assert_pulls_intact(client, "app", "kept", kept)


async def test_an_untagged_manifest_is_kept_by_default(gc_registry: GcRegistry) -> None:
    client = gc_registry.client
    old = await push_layers(client, "app", "v1", [random_bytes(80)])
    new = await push_layers(client, "app", "v1", [random_bytes(90)])

    assert await gc_registry.collect() == Summary()

    await assert_pulls_intact(client, "app", old.digest, old)
    await assert_pulls_intact(client, "app", "v1", new)


async def test_with_collect_an_untagged_manifest_goes_after_the_grace_period(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    old_layer = random_bytes(80)
    old = await push_layers(client, "app", "v1", [old_layer])
    new = await push_layers(client, "app", "v1", [random_bytes(90)])

    assert await gc_registry.collect(untagged="collect", grace_period=HOUR) == Summary()
    summary = await gc_registry.collect(untagged="collect")

    old_config = next(data for data in old.blobs.values() if data != old_layer)
    assert summary == Summary(
        manifests=1, links=2, blobs=3, blob_bytes=sizes(old.body, old_config, old_layer)
    )
    assert_error(await client.get(f"/v2/app/manifests/{old.digest}"), 404, "MANIFEST_UNKNOWN")
    assert not any(gc_registry.has_bytes(digest) for digest in (old.digest, *old.blobs))
    await assert_pulls_intact(client, "app", "v1", new)


async def test_with_collect_children_of_a_kept_index_and_referrers_of_a_kept_manifest_stay(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    amd64 = await push_layers(client, "app", None, [random_bytes(40)])
    arm64 = await push_layers(client, "app", None, [random_bytes(41)])
    index = await push_index(client, "app", [amd64, arm64], tag="multi")
    signature = await push_artifact(client, "app", SIGNATURE, subject=amd64)
    loose = await push_layers(client, "app", None, [random_bytes(42)])
    loose_signature = await push_artifact(client, "app", SIGNATURE, subject=loose)

    summary = await gc_registry.collect(untagged="collect")

    assert summary.manifests == 2
    for gone in (loose, loose_signature):
        response = await client.get(f"/v2/app/manifests/{gone.digest}")
        assert_error(response, 404, "MANIFEST_UNKNOWN")
        assert not gc_registry.has_bytes(gone.digest)
    await assert_pulls_intact(client, "app", "multi", index)
    for child in (amd64, arm64, signature):
        await assert_pulls_intact(client, "app", child.digest, child)
    referrers = (await client.get(f"/v2/app/referrers/{amd64.digest}")).json()["manifests"]
    assert [referrer["digest"] for referrer in referrers] == [signature.digest]


async def test_deleting_the_tag_of_an_index_lets_collect_take_it_and_its_children(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    children = [await push_layers(client, "app", None, [random_bytes(30)]) for _ in range(2)]
    index = await push_index(client, "app", children, tag="multi")
    kept = await push_layers(client, "app", "kept", [random_bytes(31)])
    assert (await client.delete("/v2/app/manifests/multi")).status_code == 202

    summary = await gc_registry.collect(untagged="collect")

    assert summary.manifests == 3
    for gone in (index, *children):
        assert not gc_registry.has_bytes(gone.digest)
        assert not any(gc_registry.has_bytes(digest) for digest in gone.blobs)
    await assert_pulls_intact(client, "app", "kept", kept)


async def test_a_blob_pushed_but_never_referenced_goes_after_the_grace_period(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    data = random_bytes(500)
    digest = await push_blob(client, "app", data)

    assert await gc_registry.collect(grace_period=HOUR) == Summary()
    assert (await client.get(f"/v2/app/blobs/{digest}")).content == data
    assert await gc_registry.collect() == Summary(links=1, blobs=1, blob_bytes=500)

    assert_error(await client.get(f"/v2/app/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert not gc_registry.has_bytes(digest)


async def test_a_blob_another_repository_links_stays(gc_registry: GcRegistry) -> None:
    client = gc_registry.client
    shared = random_bytes(100)
    image = await push_layers(client, "one", "v1", [shared])
    other = await push_layers(client, "two", "v1", [shared])
    await client.delete(f"/v2/one/manifests/{image.digest}")

    await gc_registry.collect()

    assert_error(await client.get(f"/v2/one/blobs/{digest_of(shared)}"), 404, "BLOB_UNKNOWN")
    await assert_pulls_intact(client, "two", "v1", other)


async def test_a_blob_unlinked_by_delete_stays_while_a_manifest_references_it(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    layer = random_bytes(100)
    image = await push_layers(client, "app", "v1", [layer])
    assert (await client.delete(f"/v2/app/blobs/{digest_of(layer)}")).status_code == 202

    assert await gc_registry.collect() == Summary()

    assert gc_registry.has_bytes(digest_of(layer))
    await client.delete(f"/v2/app/manifests/{image.digest}")
    assert (await gc_registry.collect()).blobs == 3
    assert not gc_registry.has_bytes(digest_of(layer))


async def test_a_mount_from_a_collected_link_becomes_an_upload(gc_registry: GcRegistry) -> None:
    """end-11: "If the registry cannot mount the blob, it SHOULD respond with a 202" and an
    upload session, as for a mount from a repository that never had the blob."""
    client = gc_registry.client
    digest = await push_blob(client, "source", random_bytes(64))
    await gc_registry.collect()

    response = await client.post(
        "/v2/target/blobs/uploads/", params={"mount": digest, "from": "source"}
    )

    assert response.status_code == 202
    assert "/blobs/uploads/" in response.headers["location"]


async def test_abandoned_upload_sessions_expire_with_their_bytes(gc_registry: GcRegistry) -> None:
    client = gc_registry.client
    location = await start_upload(client, "app")
    chunk = random_bytes(1000)
    patched = await client.patch(location, content=chunk, headers={"Content-Range": "0-999"})
    assert patched.status_code == 202
    assert (await gc_registry.collect()).uploads == 0

    summary = await gc_registry.collect(upload_expiry=timedelta(0))

    assert (summary.uploads, summary.upload_bytes) == (1, 1000)
    assert_error(await client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert gc_registry.files() == set()


async def test_upload_objects_of_no_session_go_once_old(gc_registry: GcRegistry) -> None:
    stray = keys.upload_part(uuid.uuid4().hex, uuid.uuid4().hex)
    young = keys.upload_part(uuid.uuid4().hex, uuid.uuid4().hex)
    foreign = "uploads/readme"  # not a key the registry makes: left alone
    for key in (stray, young, foreign):
        await gc_registry.storage.put(key, b"x" * 10)
    age(gc_registry.storage.local_path(stray), 2 * 86400)

    summary = await gc_registry.collect()

    assert (summary.strays, summary.stray_bytes) == (1, 10)
    assert gc_registry.files() == {young, foreign}


async def test_blob_bytes_without_a_record_go_once_older_than_the_grace_period(
    gc_registry: GcRegistry,
) -> None:
    data = random_bytes(321)
    digest = digest_of(data)
    await gc_registry.storage.put(keys.blob(Digest.parse(digest)), data)

    assert await gc_registry.collect(grace_period=HOUR) == Summary()
    age(gc_registry.path(digest), 2 * 3600)
    assert await gc_registry.collect(grace_period=HOUR) == Summary(orphans=1, orphan_bytes=321)

    assert not gc_registry.has_bytes(digest)
    # The digest can be pushed again.
    assert await push_blob(gc_registry.client, "app", data) == digest
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest}")).content == data


async def test_a_blob_a_dead_writer_reserved_goes_once_its_reservation_expires(
    gc_registry: GcRegistry,
) -> None:
    data = random_bytes(222)
    digest = digest_of(data)
    await gc_registry.metadata.reserve_blob(digest, len(data), "a writer that died")
    await gc_registry.storage.put(keys.blob(Digest.parse(digest)), data)

    assert await gc_registry.collect() == Summary()
    summary = await gc_registry.collect(upload_expiry=timedelta(0))

    assert summary == Summary(blobs=1, blob_bytes=222, reservations=1)
    assert not gc_registry.has_bytes(digest)


async def test_tags_naming_no_manifest_are_removed(gc_registry: GcRegistry) -> None:
    client = gc_registry.client
    image = await push_layers(client, "app", "v1", [random_bytes(10)])
    engine = create_engine(gc_registry.settings.metadata_url)
    with engine.begin() as conn:  # as an older version's race could leave one
        conn.execute(
            insert(tags).values(
                repository_id=1,
                name="dangling",
                digest=digest_of(b"gone"),
                updated_at=datetime.now(UTC),
            )
        )
    engine.dispose()
    assert (await client.get("/v2/app/tags/list")).json()["tags"] == ["dangling", "v1"]

    assert (await gc_registry.collect()).tags == 1

    assert (await client.get("/v2/app/tags/list")).json()["tags"] == ["v1"]
    await assert_pulls_intact(client, "app", "v1", image)


async def test_one_collection_runs_at_a_time(gc_registry: GcRegistry) -> None:
    await push_blob(gc_registry.client, "app", random_bytes(10))
    await gc_registry.metadata.acquire_lease("gc", "another collector", HOUR)

    with pytest.raises(CollectionRunning, match="another collector"):
        await gc_registry.collect()
    assert (await gc_registry.collect(dry_run=True)).blobs == 1  # takes no lease

    await gc_registry.metadata.release_lease("gc", "another collector")
    assert (await gc_registry.collect()).blobs == 1
