"""`portside import distribution` (registry/import_distribution.py) on a registry in-process, from
trees written file for file as distribution lays them out (tests/e2e has one written by the real
distribution): every tag pulls with the same digests, bad entries are reported and left out,
and a rerun, a resumed run and a dry run change nothing they should not."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from distribution_trees import Image, Tree
from gc_helpers import GcRegistry, gc_registry
from helpers import assert_error, random_bytes

from portside.registry import keys
from portside.registry.distribution_tree import (
    DistributionTree,
    FolderSource,
    NotADistributionTree,
)
from portside.registry.gc import Progress
from portside.registry.import_distribution import DistributionImport, Issue, Report, Target
from portside.registry.names import Digest
from portside.storage.base import NotFound
from s3 import S3Server, leftovers, wipe

__all__ = ["gc_registry"]  # the fixture, imported

pytestmark = pytest.mark.filesystem_only("imports by hard links into the storage folder")


async def run_import(
    registry: GcRegistry, tree: Tree, dry_run: bool = False, progress: Progress | None = None
) -> Report:
    target = None if dry_run else Target(registry.storage, registry.metadata)
    source = DistributionTree(FolderSource(tree.root))
    return await DistributionImport(source, target, progress).run()


def problems(report: Report) -> set[tuple[Issue, str]]:
    return {(p.issue, p.where) for p in report.problems}


async def assert_pulls(client: httpx.AsyncClient, name: str, tag: str, image: Image) -> None:
    response = await client.get(f"/v2/{name}/manifests/{tag}")
    assert response.status_code == 200, (name, tag, response.text)
    assert response.headers["docker-content-digest"] == image.digest
    assert response.content == image.body
    for digest, data in image.blobs.items():
        blob = await client.get(f"/v2/{name}/blobs/{digest}")
        assert (blob.status_code, blob.content) == (200, data), (name, digest)


@pytest.fixture
def tree(gc_registry: GcRegistry) -> tuple[Tree, dict[str, Image]]:
    """Two repositories sharing a base layer, a multi-arch list, a deleted image, a corrupt and
    a missing layer, and bytes no repository links; on the registry's filesystem."""
    tree = Tree(Path(gc_registry.settings.storage_path).parent / "distribution")
    base = random_bytes(2000)
    amd64 = tree.push_image("library/alpine", "3-amd64", [base, random_bytes(500)])
    arm64 = tree.push_image("library/alpine", None, [base, random_bytes(500)])
    images = {
        "library/alpine:3-amd64": amd64,
        "library/alpine:3": tree.push_list("library/alpine", "3", [amd64, arm64]),
        "team/app:v1": tree.push_image("team/app", "v1", [base, random_bytes(700)]),
        "team/app:latest": tree.push_image("team/app", "latest", [base]),
    }
    # Deleted through the API: distribution removes the revision link and the tag's folder.
    old = tree.push_image("team/app", "old")
    (
        tree.v2 / "repositories/team/app/_manifests/revisions/sha256" / old.digest[7:] / "link"
    ).unlink()
    for path in sorted((tree.v2 / "repositories/team/app/_manifests/tags/old").rglob("*"))[::-1]:
        path.unlink() if path.is_file() else path.rmdir()
    (tree.v2 / "repositories/team/app/_manifests/tags/old").rmdir()
    corrupt = tree.push_image("broken/corrupt", "v1")
    layer = next(d for d, data in corrupt.blobs.items() if len(data) == 300)
    tree.data(layer).write_bytes(b"x" + corrupt.blobs[layer][1:])
    missing = tree.push_image("broken/missing", "v1")
    gone = next(d for d, data in missing.blobs.items() if len(data) == 300)
    tree.data(gone).unlink()
    images["orphan"] = Image(tree.write_blob(random_bytes(100)), b"")
    images["old"], images["corrupt-layer"], images["gone"] = (
        old,
        Image(layer, b""),
        Image(gone, b""),
    )
    return tree, images


def expected_problems(images: dict[str, Image]) -> set[tuple[Issue, str]]:
    return {
        (Issue.CORRUPT, images["corrupt-layer"].digest),
        (Issue.INCOMPLETE, "broken/corrupt"),
        (Issue.DANGLING_TAG, "broken/corrupt:v1"),
        (Issue.MISSING, images["gone"].digest),
        (Issue.INCOMPLETE, "broken/missing"),
        (Issue.DANGLING_TAG, "broken/missing:v1"),
        (Issue.ORPHAN, images["orphan"].digest),
        (Issue.ORPHAN, images["old"].digest),  # the deleted manifest's bytes
    }


async def test_every_tag_pulls_with_the_same_digests_and_bad_entries_are_reported(
    gc_registry: GcRegistry, tree: tuple[Tree, dict[str, Image]]
) -> None:
    source, images = tree
    client = gc_registry.client

    report = await run_import(gc_registry, source)

    assert problems(report) == expected_problems(images)
    for reference in ("library/alpine:3-amd64", "team/app:v1", "team/app:latest"):
        name, tag = reference.split(":")
        await assert_pulls(client, name, tag, images[reference])
    listing = await client.get("/v2/library/alpine/manifests/3")
    assert listing.headers["docker-content-digest"] == images["library/alpine:3"].digest
    for child in json.loads(listing.content)["manifests"]:
        assert (await client.get(f"/v2/library/alpine/manifests/{child['digest']}")).is_success
    # broken/corrupt has its sound blobs linked, but no manifest: the catalog leaves it out.
    catalog = (await client.get("/v2/_catalog")).json()["repositories"]
    assert catalog == ["library/alpine", "team/app"]
    assert (await client.get("/v2/team/app/tags/list")).json()["tags"] == ["latest", "v1"]
    assert_error(await client.get("/v2/team/app/manifests/old"), 404, "MANIFEST_UNKNOWN")
    # Hard links: the bytes are distribution's file, not a copy; each blob taken over once.
    layer = next(d for d, data in images["team/app:v1"].blobs.items() if len(data) == 700)
    assert gc_registry.path(layer).stat().st_ino == source.data(layer).stat().st_ino
    assert (report.repositories, report.tags, report.manifests, report.copied) == (4, 4, 5, 0)


async def test_a_rerun_finds_everything_done(
    gc_registry: GcRegistry, tree: tuple[Tree, dict[str, Image]]
) -> None:
    source, _ = tree
    first = await run_import(gc_registry, source)
    state = await gc_registry.metadata.gc_snapshot()

    again = await run_import(gc_registry, source)

    assert again.taken == 0 < first.taken
    assert problems(again) == problems(first)
    assert (again.blobs, again.manifests, again.tags) == (first.blobs, first.manifests, first.tags)
    after = await gc_registry.metadata.gc_snapshot()
    assert (after.manifests, after.tags) == (state.manifests, state.tags)
    assert {(r.repository, r.digest) for r in after.links} == {
        (r.repository, r.digest) for r in state.links
    }


class Interrupt:
    """A progress that stops the import once it has done some repositories, as a kill would."""

    def __init__(self, after: int) -> None:
        self.left = after

    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        self.left -= steps
        if self.left == 0:
            raise KeyboardInterrupt


async def test_an_interrupted_import_resumes_to_the_same_result(
    gc_registry: GcRegistry, tree: tuple[Tree, dict[str, Image]]
) -> None:
    source, images = tree
    with pytest.raises(KeyboardInterrupt):
        await run_import(gc_registry, source, progress=Interrupt(after=2))
    assert (await gc_registry.client.get("/v2/team/app/manifests/v1")).status_code == 404

    report = await run_import(gc_registry, source)

    assert problems(report) == expected_problems(images)
    await assert_pulls(gc_registry.client, "team/app", "v1", images["team/app:v1"])
    await assert_pulls(
        gc_registry.client, "library/alpine", "3-amd64", images["library/alpine:3-amd64"]
    )
    assert not list(Path(gc_registry.settings.storage_path, "uploads").rglob("*.*"))


async def test_a_dry_run_reports_the_same_and_changes_nothing(
    gc_registry: GcRegistry, tree: tuple[Tree, dict[str, Image]]
) -> None:
    source, images = tree
    before = sorted(p.relative_to(source.root) for p in source.root.rglob("*"))

    planned = await run_import(gc_registry, source, dry_run=True)

    assert problems(planned) == expected_problems(images)
    assert (await gc_registry.client.get("/v2/_catalog")).json()["repositories"] == []
    assert gc_registry.files() == set()
    assert sorted(p.relative_to(source.root) for p in source.root.rglob("*")) == before
    done = await run_import(gc_registry, source)
    assert (planned.blobs, planned.manifests, planned.tags) == (
        done.blobs,
        done.manifests,
        done.tags,
    )
    assert planned.taken == 0


def test_a_folder_without_a_distribution_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADistributionTree, match="holds no distribution storage"):
        DistributionTree(FolderSource(tmp_path))


async def test_into_s3_storage_the_blobs_stream_and_every_tag_pulls(
    s3_server: S3Server, gc_registry: GcRegistry, tree: tuple[Tree, dict[str, Image]]
) -> None:
    """Portside on S3 (its metadata here SQLite's): the bytes are read and written through,
    hashed on the way; a corrupt one never reaches the bucket."""
    source, images = tree
    storage = s3_server.store()
    try:
        target = Target(storage, gc_registry.metadata)
        report = await DistributionImport(DistributionTree(FolderSource(source.root)), target).run()

        assert problems(report) == expected_problems(images)
        assert report.copied == report.taken > 0
        image = images["team/app:v1"]
        for digest, data in image.blobs.items():
            assert await storage.get(keys.blob(Digest.parse(digest))) == data
        corrupt = keys.blob(Digest.parse(images["corrupt-layer"].digest))
        with pytest.raises(NotFound):
            await storage.stat(corrupt)
        assert leftovers(storage) == []
    finally:
        wipe(storage)
