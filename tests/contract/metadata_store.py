"""The contract every MetadataStore backend passes, after zot's RunMetaDBTests.

A library, not a test module: a backend's tests/contract/test_<backend>_store.py subclasses
MetadataStoreContract and overrides store and other_store, a second instance over the same data
as another worker process would hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from portside.metadata.base import (
    Conflict,
    Manifest,
    MetadataStore,
    Reference,
    ReferenceKind,
    Upload,
)

T = TypeVar("T")

INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE = "application/vnd.example.signature"
SBOM = "application/vnd.example.sbom"


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def blob(name: str) -> Reference:
    return Reference(digest(name), ReferenceKind.BLOB)


def child(name: str) -> Reference:
    return Reference(digest(name), ReferenceKind.MANIFEST)


def image(
    repository: str,
    name: str,
    *,
    subject: str | None = None,
    artifact_type: str | None = None,
    media_type: str = IMAGE,
) -> Manifest:
    return Manifest(
        repository=repository,
        digest=digest(name),
        media_type=media_type,
        size=100 + len(name),
        artifact_type=artifact_type,
        subject=subject,
        annotations=json.dumps({"org.example.name": name}),
    )


Call = Callable[[], Coroutine[Any, Any, T]]


def in_workers(calls: list[Call[T]]) -> tuple[list[T], list[BaseException]]:
    """Run the calls at once, each in its own thread and event loop as a worker process would
    (this blocks the caller's loop); what they returned and what they raised."""

    async def outcome(call: Call[T]) -> T | Exception:
        try:
            return await call()
        except Exception as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        outcomes = list(pool.map(lambda call: asyncio.run(outcome(call)), calls))
    return split(outcomes)


def split(outcomes: Sequence[T | BaseException]) -> tuple[list[T], list[BaseException]]:
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return [o for o in outcomes if not isinstance(o, BaseException)], errors


class MetadataStoreContract:
    @pytest.fixture
    def store(self) -> MetadataStore:
        raise NotImplementedError("each backend's test module returns its store here")

    @pytest.fixture
    def other_store(self) -> MetadataStore:
        raise NotImplementedError("each backend's test module returns a second instance here")

    # blobs

    async def test_linked_blob_is_readable_in_its_repository_only(
        self, store: MetadataStore
    ) -> None:
        await store.link_blob("team/app", digest("layer"), 1234)
        assert await store.linked_blob_size("team/app", digest("layer")) == 1234
        assert await store.linked_blob_size("team/other", digest("layer")) is None
        assert await store.linked_blob_size("team/app", digest("absent")) is None
        assert await store.blob_size(digest("layer")) == 1234
        assert await store.blob_size(digest("absent")) is None

    async def test_linking_twice_and_in_a_second_repository(self, store: MetadataStore) -> None:
        await store.link_blob("a", digest("layer"), 10)
        await store.link_blob("a", digest("layer"), 10)
        await store.link_blob("b", digest("layer"), 10)
        assert await store.linked_blob_size("a", digest("layer")) == 10
        assert await store.linked_blob_size("b", digest("layer")) == 10
        assert await store.blob_size(digest("layer")) == 10

    async def test_complete_upload_links_the_blob_and_ends_the_session(
        self, store: MetadataStore
    ) -> None:
        await store.create_upload("c" * 32, "team/app")
        await store.complete_upload("c" * 32, "team/app", digest("layer"), 77)
        assert await store.linked_blob_size("team/app", digest("layer")) == 77
        assert await store.get_upload("team/app", "c" * 32) is None
        # A session already gone (a concurrent closing request ended it) is no error.
        await store.complete_upload("c" * 32, "team/other", digest("layer"), 77)
        assert await store.linked_blob_size("team/other", digest("layer")) == 77

    async def test_unlink_blob(self, store: MetadataStore) -> None:
        await store.link_blob("a", digest("layer"), 10)
        await store.link_blob("b", digest("layer"), 10)
        assert await store.unlink_blob("a", digest("layer")) is True
        assert await store.linked_blob_size("a", digest("layer")) is None
        assert await store.linked_blob_size("b", digest("layer")) == 10
        assert await store.blob_size(digest("layer")) == 10
        assert await store.unlink_blob("a", digest("layer")) is False
        assert await store.unlink_blob("absent", digest("layer")) is False
        await store.link_blob("a", digest("layer"), 10)
        assert await store.linked_blob_size("a", digest("layer")) == 10

    async def test_repository_exists_once_something_is_linked(self, store: MetadataStore) -> None:
        assert await store.repository_exists("team/app") is False
        await store.create_upload("0" * 32, "team/app")
        assert await store.repository_exists("team/app") is False
        await store.link_blob("team/app", digest("layer"), 1)
        await store.put_manifest(image("team/other", "m"), [], "latest")
        assert await store.repository_exists("team/app") is True
        assert await store.repository_exists("team/other") is True
        assert await store.repository_exists("team") is False

    # upload sessions

    async def test_create_then_get_upload(self, store: MetadataStore) -> None:
        created = await store.create_upload("a" * 32, "team/app")
        assert (created.id, created.repository, created.offset) == ("a" * 32, "team/app", 0)
        assert (created.hashed_offset, created.hashed_digest) == (0, None)
        assert created.created_at.tzinfo is not None
        assert created.updated_at == created.created_at
        assert await store.get_upload("team/app", "a" * 32) == created

    async def test_upload_is_only_found_in_its_repository(self, store: MetadataStore) -> None:
        await store.create_upload("a" * 32, "team/app")
        assert await store.get_upload("team/other", "a" * 32) is None
        assert await store.get_upload("team/app", "b" * 32) is None

    async def test_advance_upload(self, store: MetadataStore) -> None:
        created = await store.create_upload("a" * 32, "team/app")
        hashed = hashlib.sha256(b"x" * 100).hexdigest()
        advanced = await store.advance_upload("a" * 32, 0, 100, hashed)
        assert (advanced.offset, advanced.hashed_offset, advanced.hashed_digest) == (
            100,
            100,
            hashed,
        )
        assert advanced.created_at == created.created_at
        assert advanced.updated_at >= created.updated_at
        assert await store.get_upload("team/app", "a" * 32) == advanced

        unhashed = await store.advance_upload("a" * 32, 100, 250, None)
        assert (unhashed.offset, unhashed.hashed_offset, unhashed.hashed_digest) == (250, 0, None)
        assert await store.get_upload("team/app", "a" * 32) == unhashed

    async def test_advance_from_a_stale_offset_is_a_conflict(self, store: MetadataStore) -> None:
        await store.create_upload("a" * 32, "team/app")
        advanced = await store.advance_upload("a" * 32, 0, 100, None)
        for stale in (0, 50, 101):
            with pytest.raises(Conflict):
                await store.advance_upload("a" * 32, stale, 200, None)
        assert await store.get_upload("team/app", "a" * 32) == advanced

    async def test_advance_of_a_missing_upload_is_a_conflict(self, store: MetadataStore) -> None:
        with pytest.raises(Conflict):
            await store.advance_upload("a" * 32, 0, 100, None)

    async def test_delete_upload(self, store: MetadataStore) -> None:
        await store.create_upload("a" * 32, "team/app")
        await store.create_upload("b" * 32, "team/app")
        assert await store.delete_upload("a" * 32) is True
        assert await store.get_upload("team/app", "a" * 32) is None
        assert await store.delete_upload("a" * 32) is False
        with pytest.raises(Conflict):
            await store.advance_upload("a" * 32, 0, 1, None)
        assert await store.get_upload("team/app", "b" * 32) is not None

    async def test_concurrent_advances_from_one_offset_let_exactly_one_win(
        self, store: MetadataStore
    ) -> None:
        await store.create_upload("a" * 32, "team/app")
        outcomes = await asyncio.gather(
            *(store.advance_upload("a" * 32, 0, size, None) for size in range(1, 17)),
            return_exceptions=True,
        )
        [winner], errors = split(outcomes)
        assert all(isinstance(error, Conflict) for error in errors), errors
        assert await store.get_upload("team/app", "a" * 32) == winner

    async def test_workers_advancing_from_one_offset_let_exactly_one_win(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        for round_ in range(3):
            upload_id = str(round_) * 32
            await store.create_upload(upload_id, "team/app")
            stores = [store, other_store] * 4

            def advance(target: MetadataStore, upload_id: str, size: int) -> Call[Upload]:
                return lambda: target.advance_upload(upload_id, 0, size, None)

            calls = [advance(s, upload_id, size) for size, s in enumerate(stores, 1)]
            [winner], errors = in_workers(calls)
            assert all(isinstance(error, Conflict) for error in errors), errors
            assert await other_store.get_upload("team/app", upload_id) == winner

    async def test_workers_linking_one_new_blob_into_new_repositories(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        stores = [store, other_store] * 4

        def link(target: MetadataStore, repository: str) -> Call[None]:
            return lambda: target.link_blob(repository, digest("base layer"), 77)

        calls = [link(s, f"team/app{n % 4}") for n, s in enumerate(stores)]
        _, errors = in_workers(calls)
        assert errors == []
        for n in range(4):
            assert await store.linked_blob_size(f"team/app{n}", digest("base layer")) == 77

    async def test_workers_pushing_one_manifest_and_tag(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        manifest = image("team/app", "m")
        references = [blob("config"), blob("layer")]
        for reference in references:
            await store.link_blob("team/app", reference.digest, 1)
        stores = [store, other_store] * 4

        def push(target: MetadataStore) -> Call[None]:
            return lambda: target.put_manifest(manifest, references, "latest")

        done, errors = in_workers([push(s) for s in stores])
        # A push that lost the race may be told Conflict (the registry then tries again), but
        # the record ends up stored once.
        assert all(isinstance(error, Conflict) for error in errors), errors
        assert len(done) >= 1
        assert await store.get_manifest("team/app", "latest") == manifest
        assert await store.list_tags("team/app", None, None) == ["latest"]

    # manifests and tags

    async def test_put_manifest_then_get_by_tag_and_by_digest(self, store: MetadataStore) -> None:
        await store.link_blob("team/app", digest("config"), 10)
        manifest = image("team/app", "m", artifact_type=SBOM)
        await store.put_manifest(manifest, [blob("config")], "latest")
        assert await store.get_manifest("team/app", "latest") == manifest
        assert await store.get_manifest("team/app", manifest.digest) == manifest
        assert await store.linked_blob_size("team/app", manifest.digest) == manifest.size
        assert await store.blob_size(manifest.digest) == manifest.size

    async def test_get_manifest_misses(self, store: MetadataStore) -> None:
        await store.put_manifest(image("team/app", "m"), [], "latest")
        assert await store.get_manifest("team/app", "other") is None
        assert await store.get_manifest("team/app", digest("other")) is None
        assert await store.get_manifest("team/other", "latest") is None
        assert await store.get_manifest("team/other", digest("m")) is None

    async def test_manifest_without_a_tag(self, store: MetadataStore) -> None:
        manifest = image("team/app", "m")
        await store.put_manifest(manifest, [], None)
        assert await store.get_manifest("team/app", manifest.digest) == manifest
        assert await store.list_tags("team/app", None, None) == []
        assert await store.list_repositories(None, None) == ["team/app"]

    async def test_retagging_moves_the_tag(self, store: MetadataStore) -> None:
        first, second = image("team/app", "first"), image("team/app", "second")
        await store.put_manifest(first, [], "latest")
        await store.put_manifest(second, [], "latest")
        assert await store.get_manifest("team/app", "latest") == second
        assert await store.get_manifest("team/app", first.digest) == first
        assert await store.list_tags("team/app", None, None) == ["latest"]
        await store.put_manifest(first, [], "latest")
        assert await store.get_manifest("team/app", "latest") == first

    async def test_same_manifest_put_twice_is_fine(self, store: MetadataStore) -> None:
        await store.link_blob("team/app", digest("layer"), 1)
        manifest = image("team/app", "m")
        await store.put_manifest(manifest, [blob("layer")], "latest")
        await store.put_manifest(manifest, [blob("layer")], "latest")
        await store.put_manifest(manifest, [blob("layer"), blob("layer")], "stable")
        await store.put_manifest(manifest, [blob("layer")], None)
        assert await store.get_manifest("team/app", "latest") == manifest
        assert await store.get_manifest("team/app", "stable") == manifest
        assert await store.list_tags("team/app", None, None) == ["latest", "stable"]

    async def test_same_manifest_in_two_repositories(self, store: MetadataStore) -> None:
        one, two = image("team/one", "m"), image("team/two", "m")
        await store.put_manifest(one, [], "latest")
        await store.put_manifest(two, [], "stable")
        assert await store.get_manifest("team/one", "latest") == one
        assert await store.get_manifest("team/two", "stable") == two
        assert await store.get_manifest("team/one", "stable") is None
        assert await store.delete_manifest("team/one", one.digest) is True
        assert await store.get_manifest("team/two", two.digest) == two

    async def test_missing_references(self, store: MetadataStore) -> None:
        await store.link_blob("team/app", digest("config"), 10)
        await store.link_blob("team/app", digest("layer"), 10)
        await store.link_blob("team/other", digest("foreign layer"), 10)
        await store.put_manifest(image("team/app", "amd64"), [blob("config")], None)
        await store.put_manifest(image("team/other", "arm64"), [], None)
        references = [
            blob("config"),
            blob("layer"),
            blob("foreign layer"),
            blob("unknown"),
            child("amd64"),
            child("arm64"),
            blob("layer"),
        ]
        missing = await store.missing_references("team/app", references)
        expected = [digest("foreign layer"), digest("unknown"), digest("arm64")]
        assert sorted(missing) == sorted(expected)
        assert await store.missing_references("team/app", []) == []
        assert sorted(await store.missing_references("absent", references[:2])) == sorted(
            [digest("config"), digest("layer")]
        )

    async def test_blob_linked_only_as_a_blob_is_no_child_manifest(
        self, store: MetadataStore
    ) -> None:
        await store.link_blob("team/app", digest("not a manifest"), 10)
        missing = await store.missing_references("team/app", [child("not a manifest")])
        assert missing == [digest("not a manifest")]

    async def test_delete_manifest_removes_its_tags(self, store: MetadataStore) -> None:
        first, second = image("team/app", "first"), image("team/app", "second")
        await store.put_manifest(first, [], "latest")
        await store.put_manifest(first, [], "1.0")
        await store.put_manifest(second, [], "2.0")
        assert await store.delete_manifest("team/app", first.digest) is True
        assert await store.get_manifest("team/app", first.digest) is None
        assert await store.get_manifest("team/app", "latest") is None
        assert await store.get_manifest("team/app", "1.0") is None
        assert await store.list_tags("team/app", None, None) == ["2.0"]
        assert await store.missing_references("team/app", [child("first")]) == [first.digest]
        assert await store.delete_manifest("team/app", first.digest) is False
        assert await store.delete_manifest("absent", first.digest) is False

    async def test_deleted_manifest_can_be_pushed_again(self, store: MetadataStore) -> None:
        await store.link_blob("team/app", digest("layer"), 1)
        manifest = image("team/app", "m")
        await store.put_manifest(manifest, [blob("layer")], "latest")
        await store.delete_manifest("team/app", manifest.digest)
        await store.put_manifest(manifest, [blob("layer")], "latest")
        assert await store.get_manifest("team/app", "latest") == manifest

    async def test_delete_tag(self, store: MetadataStore) -> None:
        manifest = image("team/app", "m")
        await store.put_manifest(manifest, [], "latest")
        await store.put_manifest(manifest, [], "stable")
        assert await store.delete_tag("team/app", "latest") is True
        assert await store.get_manifest("team/app", "latest") is None
        assert await store.get_manifest("team/app", "stable") == manifest
        assert await store.get_manifest("team/app", manifest.digest) == manifest
        assert await store.delete_tag("team/app", "latest") is False
        assert await store.delete_tag("absent", "stable") is False

    async def test_list_tags_in_lexical_order_with_paging(self, store: MetadataStore) -> None:
        names = ["latest", "1.0", "1.10", "1.9", "V2", "v2", "_x", "a-b", "a.b", "a_b", "ab", "A"]
        for name in names:
            await store.put_manifest(image("team/app", name), [], name)
        await store.put_manifest(image("team/other", "x"), [], "other")
        expected = sorted(names)  # code point order, as distribution's sort.Strings
        assert await store.list_tags("team/app", None, None) == expected
        assert await store.list_tags("team/app", 3, None) == expected[:3]
        assert await store.list_tags("team/app", None, expected[3]) == expected[4:]
        assert await store.list_tags("team/app", 2, expected[3]) == expected[4:6]
        assert await store.list_tags("team/app", 0, None) == []
        assert await store.list_tags("team/app", None, "zzz") == []
        assert await store.list_tags("team/app", 5, "1.5") == [t for t in expected if t > "1.5"][:5]
        assert await store.list_tags("absent", None, None) == []
        pages: list[str] = []
        last = None
        while page := await store.list_tags("team/app", 5, last):
            pages += page
            last = page[-1]
        assert pages == expected

    async def test_list_repositories_with_a_manifest_in_lexical_order(
        self, store: MetadataStore
    ) -> None:
        names = ["a", "a-b", "a.b", "a0/x", "a_b/x", "a/b", "a/b/c", "ab", "z9", "team/app"]
        for name in names:
            await store.put_manifest(image(name, "m"), [], "latest")
        await store.link_blob("blob/only", digest("layer"), 1)
        await store.create_upload("a" * 32, "upload/only")
        await store.put_manifest(image("deleted", "m"), [], "latest")
        await store.delete_manifest("deleted", digest("m"))
        expected = sorted(names)
        assert await store.list_repositories(None, None) == expected
        assert await store.list_repositories(4, None) == expected[:4]
        assert await store.list_repositories(3, expected[4]) == expected[5:8]
        assert await store.list_repositories(None, "a/b") == [r for r in expected if r > "a/b"]
        assert await store.list_repositories(0, None) == []

    async def test_list_referrers(self, store: MetadataStore) -> None:
        subject = image("team/app", "subject")
        signature = image("team/app", "signature", subject=subject.digest, artifact_type=SIGNATURE)
        sbom = image("team/app", "sbom", subject=subject.digest, artifact_type=SBOM)
        untyped = image("team/app", "untyped", subject=subject.digest)
        elsewhere = image("team/other", "sig", subject=subject.digest, artifact_type=SIGNATURE)
        unrelated = image("team/app", "unrelated", artifact_type=SIGNATURE)
        await store.put_manifest(subject, [], "latest")
        for manifest in (signature, sbom, untyped, elsewhere, unrelated):
            await store.put_manifest(manifest, [], None)

        found = await store.list_referrers("team/app", subject.digest, None)
        assert sorted(found, key=lambda m: m.digest) == sorted(
            [signature, sbom, untyped], key=lambda m: m.digest
        )
        assert await store.list_referrers("team/app", subject.digest, SIGNATURE) == [signature]
        assert await store.list_referrers("team/app", subject.digest, "x/none") == []
        assert await store.list_referrers("team/app", digest("no such"), None) == []
        assert await store.list_referrers("absent", subject.digest, None) == []
        await store.delete_manifest("team/app", sbom.digest)
        assert sorted(
            m.digest for m in await store.list_referrers("team/app", subject.digest, None)
        ) == sorted([signature.digest, untyped.digest])

    async def test_referrers_need_no_subject_manifest(self, store: MetadataStore) -> None:
        signature = image("team/app", "sig", subject=digest("absent"), artifact_type=SIGNATURE)
        await store.put_manifest(signature, [], None)
        assert await store.list_referrers("team/app", digest("absent"), None) == [signature]

    async def test_index_with_child_manifests(self, store: MetadataStore) -> None:
        await store.put_manifest(image("team/app", "amd64"), [], None)
        await store.put_manifest(image("team/app", "arm64"), [], None)
        index = image("team/app", "index", media_type=INDEX)
        references = [child("amd64"), child("arm64")]
        assert await store.missing_references("team/app", references) == []
        await store.put_manifest(index, references, "latest")
        assert await store.get_manifest("team/app", "latest") == index
