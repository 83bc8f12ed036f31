"""`portside import distribution` from a tree in an S3 bucket (registry/distribution_bucket.py),
on the real S3 server: the same hand-written tree as test_import_distribution.py, copied into a
bucket of its own as distribution's s3 driver lays it out under a rootdirectory. Into Portside's
S3 store the blobs go by server-side copies (the bytes are only read, once, to hash them; none
is uploaded); into a folder they stream. Bad entries are reported alike, and an interrupted,
repeated or dry run changes nothing it should not; with SQLite and PostgreSQL metadata.
tests/e2e/test_e2e_import_s3.py does it with a bucket filled by the real distribution."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from distribution_trees import Image, Tree
from gc_helpers import GcRegistry, gc_registry
from helpers import random_bytes
from test_import_distribution import Interrupt, assert_pulls, expected_problems, problems, tree

from portside.registry import keys
from portside.registry.distribution_bucket import BucketSource
from portside.registry.distribution_tree import DistributionTree, Placement
from portside.registry.gc import Progress
from portside.registry.import_distribution import DistributionImport, Issue, Report, Target
from portside.registry.names import Digest
from portside.storage.base import NotFound
from portside.storage.s3 import S3BlobStore
from portside.storage.s3_bucket import MiB, make_client
from s3 import S3Server, leftovers, wipe

__all__ = ["gc_registry", "tree"]  # the fixtures, imported

pytestmark = [
    pytest.mark.filesystem_only("imports into stores of its own making"),
    pytest.mark.parametrize("gc_registry", ["sqlite", "postgresql"], indirect=True),
]

ROOT = "distribution/root"  # distribution's s3 rootdirectory


class Calls:
    """What a boto3 client sent: (operation, key) of each call, and the request body bytes."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, str]] = []
        self.body_bytes = 0
        # Before the parameters are built: `params` are still the call's own (with its Key).
        client.meta.events.register("before-parameter-build.s3", self._call)
        client.meta.events.register("before-send.s3", self._send)

    def _call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, str(params.get("Key", ""))))

    def _send(self, request: Any, **_: Any) -> None:
        body = request.body
        if isinstance(body, bytes | bytearray):
            self.body_bytes += len(body)
        elif body is not None:
            self.body_bytes += int(request.headers.get("Content-Length") or 0)

    def keys(self, operation: str) -> set[str]:
        return {key for name, key in self.calls if name == operation}


@pytest.fixture
def bucket(s3_server: S3Server, tree: tuple[Tree, dict[str, Image]]) -> Iterator[BucketSource]:
    """The tree, with a layer big enough for a multipart copy, in a bucket of its own."""
    source, images = tree
    big = source.push_image("team/big", "v1", [random_bytes(11 * MiB)])
    images["team/big:v1"] = big
    client = make_client(
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        path_style=True,
    )
    name = f"distribution-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    try:
        for path in sorted(p for p in source.root.rglob("*") if p.is_file()):
            key = f"{ROOT}/{path.relative_to(source.root).as_posix()}"
            client.put_object(Bucket=name, Key=key, Body=path.read_bytes())
        yield BucketSource(client, name, ROOT)
    finally:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=name)
        for page in pages:
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[S3BlobStore]:
    """Portside's store, copying in parts above 5 MiB so that the big layer takes that path."""
    storage = s3_server.store(max_copy_size=5 * MiB, copy_part_size=5 * MiB)
    yield storage
    wipe(storage)


async def run_import(
    source: BucketSource,
    storage: Any,
    registry: GcRegistry,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Report:
    target = None if dry_run else Target(storage, registry.metadata)
    return await DistributionImport(DistributionTree(source), target, progress).run()


async def test_into_s3_the_blobs_are_read_once_to_check_them_and_copied_once_server_side(
    gc_registry: GcRegistry,
    tree: tuple[Tree, dict[str, Image]],
    bucket: BucketSource,
    s3_store: S3BlobStore,
) -> None:
    _, images = tree
    read, written = Calls(bucket.client), Calls(s3_store.client)

    report = await run_import(bucket, s3_store, gc_registry)

    assert problems(report) == expected_problems(images)
    assert report.placements == {Placement.SERVER_SIDE: report.taken}
    assert report.taken_bytes > 11 * MiB
    # Nothing went up but manifests and the requests' XML (parts, deletes): no blob's bytes.
    operations = {name for name, _ in written.calls}
    assert "UploadPart" not in operations
    assert written.body_bytes < 64 * 1024 < report.taken_bytes
    # Each blob read once, at the tree, to check it; and copied once, straight to its own key:
    # no temporary object copied, read back and copied again.
    copied = {key for name, key in written.calls if name in ("CopyObject", "UploadPartCopy")}
    assert len(copied) == report.taken
    digests = [keys.blob_digest(key.removeprefix(s3_store.prefix)) for key in copied]
    tree_reads = [key for name, key in read.calls if name == "GetObject"]
    for digest in digests:
        assert digest is not None
        assert tree_reads.count(bucket.prefix + DistributionTree.blob_path(digest)) == 1
    assert "UploadPartCopy" in operations  # the 11 MiB layer
    for reference in ("team/app:v1", "team/big:v1"):
        for digest, data in images[reference].blobs.items():
            assert await s3_store.get(keys.blob(Digest.parse(digest))) == data
    with pytest.raises(NotFound):
        await s3_store.stat(keys.blob(Digest.parse(images["corrupt-layer"].digest)))
    assert leftovers(s3_store) == []


async def test_into_a_folder_the_blobs_stream_and_every_tag_pulls(
    gc_registry: GcRegistry, tree: tuple[Tree, dict[str, Image]], bucket: BucketSource
) -> None:
    _, images = tree

    report = await run_import(bucket, gc_registry.storage, gc_registry)

    assert problems(report) == expected_problems(images)
    assert report.placements == {Placement.STREAMED: report.taken}
    for reference in ("library/alpine:3-amd64", "team/app:v1", "team/big:v1"):
        name, tag = reference.split(":")
        await assert_pulls(gc_registry.client, name, tag, images[reference])
    catalog = (await gc_registry.client.get("/v2/_catalog")).json()["repositories"]
    assert catalog == ["library/alpine", "team/app", "team/big"]


async def test_an_interrupted_import_resumes_a_rerun_takes_nothing_a_dry_run_writes_nothing(
    gc_registry: GcRegistry,
    tree: tuple[Tree, dict[str, Image]],
    bucket: BucketSource,
    s3_store: S3BlobStore,
) -> None:
    _, images = tree
    written = Calls(s3_store.client)
    planned = await run_import(bucket, s3_store, gc_registry, dry_run=True)
    assert problems(planned) == expected_problems(images)
    assert (planned.taken, written.calls) == (0, [])
    assert (await gc_registry.client.get("/v2/_catalog")).json()["repositories"] == []

    with pytest.raises(KeyboardInterrupt):
        await run_import(bucket, s3_store, gc_registry, progress=Interrupt(after=2))
    done = await run_import(bucket, s3_store, gc_registry)
    again = await run_import(bucket, s3_store, gc_registry)

    assert problems(done) == problems(again) == expected_problems(images)
    assert (planned.blobs, planned.manifests, planned.tags) == (
        done.blobs,
        done.manifests,
        done.tags,
    )
    assert again.taken == 0 < done.taken
    for digest, data in images["team/big:v1"].blobs.items():
        assert await s3_store.get(keys.blob(Digest.parse(digest))) == data
    assert leftovers(s3_store) == []


async def test_a_blob_gone_from_the_bucket_after_the_listing_is_missing(
    gc_registry: GcRegistry,
    tree: tuple[Tree, dict[str, Image]],
    bucket: BucketSource,
    s3_store: S3BlobStore,
) -> None:
    _, images = tree
    layer = next(d for d, data in images["team/app:v1"].blobs.items() if len(data) == 700)
    bucket.client.delete_object(
        Bucket=bucket.bucket, Key=bucket.prefix + DistributionTree.blob_path(Digest.parse(layer))
    )

    report = await run_import(bucket, s3_store, gc_registry)

    assert (Issue.MISSING, layer) in problems(report)
    assert (Issue.DANGLING_TAG, "team/app:v1") in problems(report)


async def test_a_blob_rewritten_after_the_listing_is_not_taken(
    gc_registry: GcRegistry,
    tree: tuple[Tree, dict[str, Image]],
    bucket: BucketSource,
    s3_store: S3BlobStore,
) -> None:
    """The version listed is read and copied (on its ETag): other bytes put there since are
    neither checked in its stead nor copied as the blob."""
    _, images = tree
    layer = next(d for d, data in images["team/app:v1"].blobs.items() if len(data) == 700)
    bucket.client.put_object(
        Bucket=bucket.bucket,
        Key=bucket.prefix + DistributionTree.blob_path(Digest.parse(layer)),
        Body=b"other bytes",
    )

    report = await run_import(bucket, s3_store, gc_registry)

    assert (Issue.MISSING, layer) in problems(report)
    with pytest.raises(NotFound):
        await s3_store.stat(keys.blob(Digest.parse(layer)))
