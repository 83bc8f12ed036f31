"""`portside verify` (registry/verify.py) on a registry in-process: bytes damaged or lost behind
the registry's back are found, and --repair leaves clients a clean 404 and a way to push again."""

from __future__ import annotations

import pytest
from gc_helpers import GcRegistry, assert_pulls_intact, gc_registry, push_layers
from helpers import assert_error, digest_of, push_blob, push_image, push_index, random_bytes

from portside.registry.verify import Fault, Verifier

__all__ = ["gc_registry"]  # the fixture, imported

pytestmark = pytest.mark.parametrize("gc_registry", ["sqlite", "postgresql"], indirect=True)


def flip_a_byte(registry: GcRegistry, digest: str) -> None:
    path = registry.path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def verifier(registry: GcRegistry) -> Verifier:
    return Verifier(registry.storage, registry.metadata)


async def test_a_sound_registry_verifies_clean(gc_registry: GcRegistry) -> None:
    pushed = await push_image(gc_registry.client, "app", "v1")

    report = await verifier(gc_registry).verify()

    assert report.findings == []
    assert report.blobs == 1 + len(pushed.blobs)  # the manifest is a blob too
    assert report.bytes == len(pushed.body) + sum(len(data) for data in pushed.blobs.values())


async def test_a_flipped_byte_and_a_lost_blob_are_found_and_nothing_changes(
    gc_registry: GcRegistry,
) -> None:
    corrupt, lost, sound = random_bytes(300), random_bytes(200), random_bytes(100)
    pushed = await push_layers(gc_registry.client, "app", "v1", [corrupt, lost, sound])
    flip_a_byte(gc_registry, digest_of(corrupt))
    gc_registry.path(digest_of(lost)).unlink()

    report = await verifier(gc_registry).verify()

    assert {(f.fault, f.digest) for f in report.findings} == {
        (Fault.CORRUPT, digest_of(corrupt)),
        (Fault.MISSING, digest_of(lost)),
    }
    assert all(f.repaired is None for f in report.findings)
    # Without --repair the registry still serves what it had (the corrupt layer included).
    assert (await gc_registry.client.get(f"/v2/app/blobs/{digest_of(corrupt)}")).status_code == 200
    manifest = await gc_registry.client.get("/v2/app/manifests/v1")
    assert manifest.content == pushed.body


async def test_repair_leaves_a_clean_404_and_a_push_stores_the_blob_anew(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    corrupt, lost, sound = random_bytes(300), random_bytes(200), random_bytes(100)
    pushed = await push_layers(client, "app", "v1", [corrupt, lost, sound])
    await push_blob(client, "other", corrupt)  # the same blob, linked in a second repository
    flip_a_byte(gc_registry, digest_of(corrupt))
    gc_registry.path(digest_of(lost)).unlink()

    report = await verifier(gc_registry).verify(repair=True)

    repaired = {f.digest: f.repaired for f in report.findings if f.fault is not Fault.UNREADABLE}
    assert repaired == {
        digest_of(corrupt): "unlinked from app, other",
        digest_of(lost): "unlinked from app",
    }
    for name in ("app", "other"):
        response = await client.get(f"/v2/{name}/blobs/{digest_of(corrupt)}")
        assert_error(response, 404, "BLOB_UNKNOWN")
    assert_error(await client.get(f"/v2/app/blobs/{digest_of(lost)}"), 404, "BLOB_UNKNOWN")
    assert not gc_registry.has_bytes(digest_of(corrupt))
    # The image's manifest stays, and verify names what it lacks until the layers come back.
    unreadable = {(f.manifest, f.digest) for f in report.of(Fault.UNREADABLE)}
    assert unreadable == {(pushed.digest, digest_of(corrupt)), (pushed.digest, digest_of(lost))}

    await push_blob(client, "app", corrupt)
    await push_blob(client, "app", lost)

    await assert_pulls_intact(client, "app", "v1", pushed)
    assert (await verifier(gc_registry).verify()).findings == []


async def test_a_corrupt_manifest_is_deleted_and_its_index_reported(
    gc_registry: GcRegistry,
) -> None:
    client = gc_registry.client
    amd64, arm64 = await push_image(client, "app", "amd64"), await push_image(client, "app", None)
    index = await push_index(client, "app", [amd64, arm64], tag="multi")
    flip_a_byte(gc_registry, amd64.digest)

    report = await verifier(gc_registry).verify(repair=True)

    [corrupt] = report.of(Fault.CORRUPT)
    assert (corrupt.digest, corrupt.repaired) == (amd64.digest, "manifest deleted in app")
    assert_error(await client.get("/v2/app/manifests/amd64"), 404, "MANIFEST_UNKNOWN")
    assert_error(await client.get(f"/v2/app/manifests/{amd64.digest}"), 404, "MANIFEST_UNKNOWN")
    [unreadable] = report.of(Fault.UNREADABLE)
    assert (unreadable.manifest, unreadable.digest) == (index.digest, amd64.digest)
    assert (await client.get("/v2/app/manifests/multi")).status_code == 200
