"""The contract every MetadataStore backend passes, after zot's RunMetaDBTests.

A library, not a test module: a backend's tests/contract/test_<backend>_store.py subclasses
MetadataStoreContract and overrides store and other_store, a second instance over the same data
as another worker process would hold.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from policy_store import PolicyStoreContract

from portside.metadata.base import (
    ARTIFACT_TYPE_MAX,
    LOGIN_FAILURE_PRUNE_BATCH,
    REFRESH_PRUNE_BATCH,
    TAG_MOVED,
    AuditEntry,
    AuditQuery,
    BlobState,
    Conflict,
    Holders,
    Journal,
    Manifest,
    ManifestCandidate,
    MetadataStore,
    Missing,
    Notice,
    Reference,
    ReferenceKind,
    RefreshToken,
    RepositorySummary,
    Reservation,
    Unrecordable,
    Upload,
)
from portside.registry.events import EndpointRules, Origin, Renderer, Target

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
    description: str | None = None,
) -> Manifest:
    return Manifest(
        repository=repository,
        digest=digest(name),
        media_type=media_type,
        size=100 + len(name),
        artifact_type=artifact_type,
        subject=subject,
        annotations=json.dumps({"org.example.name": name}),
        description=description,
    )


def past() -> datetime:
    """A cutoff before anything a test records: nothing is old enough to collect."""
    return datetime.now(UTC) - timedelta(hours=1)


def future() -> datetime:
    """A cutoff after anything a test records: everything is old enough to collect."""
    return datetime.now(UTC) + timedelta(hours=1)


async def reserve(store: MetadataStore, digest: str, size: int) -> str:
    """A reservation of digest, as a writer takes one before it stores the bytes."""
    token = uuid.uuid4().hex
    assert await store.reserve_blob(digest, size, token) is not Reservation.BUSY
    return token


async def link(store: MetadataStore, repository: str, digest: str, size: int) -> None:
    """A blob pushed to repository as the registry does it: reserved, then recorded."""
    await store.link_blob(repository, digest, size, await reserve(store, digest, size))


async def complete(store: MetadataStore, id: str, repository: str, digest: str, size: int) -> None:
    await store.complete_upload(id, repository, digest, size, await reserve(store, digest, size))


async def put(
    store: MetadataStore,
    manifest: Manifest,
    references: Sequence[Reference],
    tag: str | None,
    journal: Journal | None = None,
) -> None:
    """A manifest pushed as the registry does it: its bytes reserved, then recorded."""
    token = await reserve(store, manifest.digest, manifest.size)
    if journal is None:
        await store.put_manifest(manifest, references, tag, token)
    else:
        await store.put_manifest(manifest, references, tag, token, journal)


def journal(action: str, endpoints: Sequence[str] = ("hook",), **audit: str) -> Journal:
    """What the registry writes with a change: an event per endpoint and an audit entry, both
    naming the action."""
    payload = json.dumps({"action": action, "n": uuid.uuid4().hex})
    entry = AuditEntry(at=datetime.now(UTC), action=action, actor="alice", **audit)
    return Journal(tuple(Notice(e, payload) for e in endpoints), (entry,))


async def actions(store: MetadataStore, endpoint: str = "hook") -> list[str]:
    """The actions of the events waiting for endpoint, in order."""
    return [json.loads(e.payload)["action"] for e in await store.pending_events(endpoint, 100)]


async def audited(store: MetadataStore, **query: Any) -> list[tuple[str, str | None]]:
    """(action, previous) of the audit entries that match, oldest first."""
    found = await store.audit_entries(AuditQuery(**query))
    return [(r.entry.action, r.entry.previous) for r in found]


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


def refresh_token(
    name: str,
    username: str = "alice",
    *,
    issued_at: datetime | None = None,
    lifetime: timedelta | None = timedelta(days=90),
) -> RefreshToken:
    """A refresh token's record: hashed as the token service hashes its tokens."""
    issued = issued_at or datetime.now(UTC).replace(microsecond=0)
    return RefreshToken(
        token_hash=hashlib.sha256(name.encode()).hexdigest(),
        username=username,
        service="registry.example.com",
        issued_at=issued,
        expires_at=None if lifetime is None else issued + lifetime,
    )


async def kept(store: MetadataStore, names: Sequence[str]) -> list[str]:
    """Those of the refresh tokens named (as refresh_token names them) that store still has."""
    return [
        name
        for name in names
        if await store.find_refresh_token(refresh_token(name).token_hash) is not None
    ]


class MetadataStoreContract(PolicyStoreContract):
    @pytest.fixture
    def store(self) -> MetadataStore:
        raise NotImplementedError("each backend's test module returns its store here")

    @pytest.fixture
    def other_store(self) -> MetadataStore:
        raise NotImplementedError("each backend's test module returns a second instance here")

    # the pull-through cache

    async def test_a_cached_manifest_is_stored_without_its_blobs_and_tagged(
        self, store: MetadataStore
    ) -> None:
        """A cache records an upstream's manifest before any of its layers is pulled."""
        manifest = image("hub/library/alpine", "alpine")
        at = datetime.now(UTC)
        token = await reserve(store, manifest.digest, manifest.size)

        await store.put_cached_manifest(manifest, [blob("layer")], "3.20", token, at)

        found = await store.get_manifest("hub/library/alpine", "3.20")
        assert found is not None
        assert found.digest == manifest.digest
        checked = await store.cached_tag("hub/library/alpine", "3.20")
        assert checked is not None
        assert abs(checked - at) < timedelta(seconds=1)
        assert await store.linked_blob_size("hub/library/alpine", digest("layer")) is None

    async def test_a_pushed_tag_is_not_a_cached_one(self, store: MetadataStore) -> None:
        manifest = image("mirror/app", "app")
        cached = image("mirror/app", "upstream-app")
        await put(store, manifest, [], "local")
        token = await reserve(store, cached.digest, cached.size)
        await store.put_cached_manifest(cached, [], "v1", token, datetime.now(UTC))

        assert await store.cached_tag("mirror/app", "local") is None
        assert await store.cached_tag("mirror/app", "absent") is None
        assert await store.cached_tag("mirror/app", "v1") is not None
        # Pushing over a cached tag makes it the registry's own.
        await put(store, manifest, [], "v1")
        assert await store.cached_tag("mirror/app", "v1") is None
        # So does deleting it.
        token = await reserve(store, cached.digest, cached.size)
        await store.put_cached_manifest(cached, [], "v2", token, datetime.now(UTC))
        assert await store.delete_tag("mirror/app", "v2")
        assert await store.cached_tag("mirror/app", "v2") is None

    async def test_touching_a_cached_manifest_keeps_it_from_expiring(
        self, store: MetadataStore
    ) -> None:
        old = datetime.now(UTC) - timedelta(days=40)
        kept, expired = image("hub/a", "kept"), image("hub/a", "expired")
        for manifest, tag in ((kept, "kept"), (expired, "expired")):
            token = await reserve(store, manifest.digest, manifest.size)
            await store.put_cached_manifest(manifest, [blob("layer")], tag, token, old)
        cutoff = datetime.now(UTC) - timedelta(days=30)

        await store.touch_cached("hub/a", kept.digest, datetime.now(UTC), tag="kept")
        await store.touch_cached("hub/a", digest("not-cached"), datetime.now(UTC))

        assert await store.expired_cached_manifests(cutoff, 10) == [("hub/a", expired.digest)]
        checked = await store.cached_tag("hub/a", "kept")
        assert checked is not None
        assert checked > cutoff

    async def test_expiring_a_cached_manifest_removes_it_and_its_tags_only_if_still_unpulled(
        self, store: MetadataStore
    ) -> None:
        old = datetime.now(UTC) - timedelta(days=40)
        manifest = image("hub/b", "b")
        token = await reserve(store, manifest.digest, manifest.size)
        await store.put_cached_manifest(manifest, [blob("layer")], "v1", token, old)
        cutoff = datetime.now(UTC) - timedelta(days=30)
        await store.touch_cached("hub/b", manifest.digest, datetime.now(UTC))

        assert not await store.expire_cached_manifest("hub/b", manifest.digest, cutoff)
        assert await store.get_manifest("hub/b", "v1") is not None
        assert await store.expire_cached_manifest("hub/b", manifest.digest, future())
        assert await store.get_manifest("hub/b", "v1") is None
        assert await store.get_manifest("hub/b", manifest.digest) is None
        assert await store.cached_tag("hub/b", "v1") is None
        assert await store.expired_cached_manifests(future(), 10) == []
        assert not await store.expire_cached_manifest("hub/b", manifest.digest, future())

    async def test_a_cached_manifest_collected_as_untagged_leaves_nothing_to_expire(
        self, store: MetadataStore
    ) -> None:
        """Its cache row goes with it: a row left behind would be listed as expired for ever,
        and a collection's expiry step would go round it without end."""
        manifest = image("hub/d", "d")
        token = await reserve(store, manifest.digest, manifest.size)
        await store.put_cached_manifest(manifest, [], None, token, datetime.now(UTC))

        deleted = await store.delete_manifests({"hub/d": [manifest.digest]}, future(), True)
        deleted_again = await store.delete_manifest("hub/d", manifest.digest)

        assert deleted == {"hub/d": [manifest.digest]}
        assert not deleted_again
        assert await store.expired_cached_manifests(future(), 10) == []

    async def test_a_pushed_manifest_never_expires_as_cached(self, store: MetadataStore) -> None:
        manifest = image("mirror/c", "c")
        await put(store, manifest, [], "v1")
        await store.touch_cached("mirror/c", manifest.digest, datetime.now(UTC))

        assert await store.expired_cached_manifests(future(), 10) == []
        assert not await store.expire_cached_manifest("mirror/c", manifest.digest, future())
        assert await store.get_manifest("mirror/c", "v1") is not None

    # blobs

    async def test_linked_blob_is_readable_in_its_repository_only(
        self, store: MetadataStore
    ) -> None:
        await link(store, "team/app", digest("layer"), 1234)
        assert await store.linked_blob_size("team/app", digest("layer")) == 1234
        assert await store.linked_blob_size("team/other", digest("layer")) is None
        assert await store.linked_blob_size("team/app", digest("absent")) is None
        assert await store.blob_size(digest("layer")) == 1234
        assert await store.blob_size(digest("absent")) is None

    async def test_linking_twice_and_in_a_second_repository(self, store: MetadataStore) -> None:
        await link(store, "a", digest("layer"), 10)
        await link(store, "a", digest("layer"), 10)
        await link(store, "b", digest("layer"), 10)
        assert await store.linked_blob_size("a", digest("layer")) == 10
        assert await store.linked_blob_size("b", digest("layer")) == 10
        assert await store.blob_size(digest("layer")) == 10

    async def test_complete_upload_links_the_blob_and_ends_the_session(
        self, store: MetadataStore
    ) -> None:
        await store.create_upload("c" * 32, "team/app")
        await complete(store, "c" * 32, "team/app", digest("layer"), 77)
        assert await store.linked_blob_size("team/app", digest("layer")) == 77
        assert await store.get_upload("team/app", "c" * 32) is None
        # A session already gone (a concurrent closing request ended it) is no error.
        await complete(store, "c" * 32, "team/other", digest("layer"), 77)
        assert await store.linked_blob_size("team/other", digest("layer")) == 77

    async def test_unlink_blob(self, store: MetadataStore) -> None:
        await link(store, "a", digest("layer"), 10)
        await link(store, "b", digest("layer"), 10)
        assert await store.unlink_blob("a", digest("layer")) is True
        assert await store.linked_blob_size("a", digest("layer")) is None
        assert await store.linked_blob_size("b", digest("layer")) == 10
        assert await store.blob_size(digest("layer")) == 10
        assert await store.unlink_blob("a", digest("layer")) is False
        assert await store.unlink_blob("absent", digest("layer")) is False
        await link(store, "a", digest("layer"), 10)
        assert await store.linked_blob_size("a", digest("layer")) == 10

    async def test_repository_exists_once_something_is_linked(self, store: MetadataStore) -> None:
        assert await store.repository_exists("team/app") is False
        await store.create_upload("0" * 32, "team/app")
        assert await store.repository_exists("team/app") is False
        await link(store, "team/app", digest("layer"), 1)
        await put(store, image("team/other", "m"), [], "latest")
        assert await store.repository_exists("team/app") is True
        assert await store.repository_exists("team/other") is True
        assert await store.repository_exists("team") is False

    # upload sessions

    async def test_closing_twice_is_harmless(self, store: MetadataStore) -> None:
        # An app's lifespan closes the store, and so may the code that built it.
        await store.close()
        await store.close()

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

        def push(target: MetadataStore, repository: str) -> Call[None]:
            return lambda: link(target, repository, digest("base layer"), 77)

        calls = [push(s, f"team/app{n % 4}") for n, s in enumerate(stores)]
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
            await link(store, "team/app", reference.digest, 1)
        stores = [store, other_store] * 4

        def push(target: MetadataStore) -> Call[None]:
            return lambda: put(target, manifest, references, "latest")

        done, errors = in_workers([push(s) for s in stores])
        # A push that lost the race may be told Conflict (the registry then tries again), but
        # the record ends up stored once.
        assert all(isinstance(error, Conflict) for error in errors), errors
        assert len(done) >= 1
        assert await store.get_manifest("team/app", "latest") == manifest
        assert await store.list_tags("team/app", None, None) == ["latest"]

    # manifests and tags

    async def test_put_manifest_then_get_by_tag_and_by_digest(self, store: MetadataStore) -> None:
        await link(store, "team/app", digest("config"), 10)
        manifest = image("team/app", "m", artifact_type=SBOM)
        await put(store, manifest, [blob("config")], "latest")
        assert await store.get_manifest("team/app", "latest") == manifest
        assert await store.get_manifest("team/app", manifest.digest) == manifest
        assert await store.linked_blob_size("team/app", manifest.digest) == manifest.size
        assert await store.blob_size(manifest.digest) == manifest.size

    async def test_get_manifest_misses(self, store: MetadataStore) -> None:
        await put(store, image("team/app", "m"), [], "latest")
        assert await store.get_manifest("team/app", "other") is None
        assert await store.get_manifest("team/app", digest("other")) is None
        assert await store.get_manifest("team/other", "latest") is None
        assert await store.get_manifest("team/other", digest("m")) is None

    async def test_manifest_without_a_tag(self, store: MetadataStore) -> None:
        manifest = image("team/app", "m")
        await put(store, manifest, [], None)
        assert await store.get_manifest("team/app", manifest.digest) == manifest
        assert await store.list_tags("team/app", None, None) == []
        assert await store.list_repositories(None, None) == ["team/app"]

    async def test_retagging_moves_the_tag(self, store: MetadataStore) -> None:
        first, second = image("team/app", "first"), image("team/app", "second")
        await put(store, first, [], "latest")
        await put(store, second, [], "latest")
        assert await store.get_manifest("team/app", "latest") == second
        assert await store.get_manifest("team/app", first.digest) == first
        assert await store.list_tags("team/app", None, None) == ["latest"]
        await put(store, first, [], "latest")
        assert await store.get_manifest("team/app", "latest") == first

    async def test_same_manifest_put_twice_is_fine(self, store: MetadataStore) -> None:
        await link(store, "team/app", digest("layer"), 1)
        manifest = image("team/app", "m")
        await put(store, manifest, [blob("layer")], "latest")
        await put(store, manifest, [blob("layer")], "latest")
        await put(store, manifest, [blob("layer"), blob("layer")], "stable")
        await put(store, manifest, [blob("layer")], None)
        assert await store.get_manifest("team/app", "latest") == manifest
        assert await store.get_manifest("team/app", "stable") == manifest
        assert await store.list_tags("team/app", None, None) == ["latest", "stable"]

    async def test_same_manifest_in_two_repositories(self, store: MetadataStore) -> None:
        one, two = image("team/one", "m"), image("team/two", "m")
        await put(store, one, [], "latest")
        await put(store, two, [], "stable")
        assert await store.get_manifest("team/one", "latest") == one
        assert await store.get_manifest("team/two", "stable") == two
        assert await store.get_manifest("team/one", "stable") is None
        assert await store.delete_manifest("team/one", one.digest) is True
        assert await store.get_manifest("team/two", two.digest) == two

    async def test_missing_references(self, store: MetadataStore) -> None:
        await link(store, "team/app", digest("config"), 10)
        await link(store, "team/app", digest("layer"), 10)
        await link(store, "team/other", digest("foreign layer"), 10)
        await put(store, image("team/app", "amd64"), [blob("config")], None)
        await put(store, image("team/other", "arm64"), [], None)
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
        await link(store, "team/app", digest("not a manifest"), 10)
        missing = await store.missing_references("team/app", [child("not a manifest")])
        assert missing == [digest("not a manifest")]

    async def test_delete_manifest_removes_its_tags(self, store: MetadataStore) -> None:
        first, second = image("team/app", "first"), image("team/app", "second")
        await put(store, first, [], "latest")
        await put(store, first, [], "1.0")
        await put(store, second, [], "2.0")
        assert await store.delete_manifest("team/app", first.digest) is True
        assert await store.get_manifest("team/app", first.digest) is None
        assert await store.get_manifest("team/app", "latest") is None
        assert await store.get_manifest("team/app", "1.0") is None
        assert await store.list_tags("team/app", None, None) == ["2.0"]
        assert await store.missing_references("team/app", [child("first")]) == [first.digest]
        assert await store.delete_manifest("team/app", first.digest) is False
        assert await store.delete_manifest("absent", first.digest) is False

    async def test_deleted_manifest_can_be_pushed_again(self, store: MetadataStore) -> None:
        await link(store, "team/app", digest("layer"), 1)
        manifest = image("team/app", "m")
        await put(store, manifest, [blob("layer")], "latest")
        await store.delete_manifest("team/app", manifest.digest)
        await put(store, manifest, [blob("layer")], "latest")
        assert await store.get_manifest("team/app", "latest") == manifest

    async def test_delete_tag(self, store: MetadataStore) -> None:
        manifest = image("team/app", "m")
        await put(store, manifest, [], "latest")
        await put(store, manifest, [], "stable")
        assert await store.delete_tag("team/app", "latest") is True
        assert await store.get_manifest("team/app", "latest") is None
        assert await store.get_manifest("team/app", "stable") == manifest
        assert await store.get_manifest("team/app", manifest.digest) == manifest
        assert await store.delete_tag("team/app", "latest") is False
        assert await store.delete_tag("absent", "stable") is False

    async def test_list_tags_in_lexical_order_with_paging(self, store: MetadataStore) -> None:
        names = ["latest", "1.0", "1.10", "1.9", "V2", "v2", "_x", "a-b", "a.b", "a_b", "ab", "A"]
        for name in names:
            await put(store, image("team/app", name), [], name)
        await put(store, image("team/other", "x"), [], "other")
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
            await put(store, image(name, "m"), [], "latest")
        await link(store, "blob/only", digest("layer"), 1)
        await store.create_upload("a" * 32, "upload/only")
        await put(store, image("deleted", "m"), [], "latest")
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
        await put(store, subject, [], "latest")
        for manifest in (signature, sbom, untyped, elsewhere, unrelated):
            await put(store, manifest, [], None)

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
        await put(store, signature, [], None)
        assert await store.list_referrers("team/app", digest("absent"), None) == [signature]

    async def test_a_last_with_nul_is_read_up_to_the_nul(self, store: MetadataStore) -> None:
        """No name or tag holds a NUL (PostgreSQL text cannot): what follows "a\\0..." in
        code-point order is what follows "a", as SQLite's byte order has it, on every store."""
        for tag in ("a", "a0", "b"):
            await put(store, image("team/app", tag), [], tag)
        await put(store, image("team/zz", "m"), [], "latest")
        assert await store.list_tags("team/app", None, "a\x00") == ["a0", "b"]
        assert await store.list_tags("team/app", None, "a\x00zz") == ["a0", "b"]
        assert await store.list_tags("team/app", 1, "a\x00") == ["a0"]
        assert await store.list_tags("team/app", None, "\x00") == ["a", "a0", "b"]
        assert await store.list_tags("team/app", None, "a" * 300) == ["b"]
        assert await store.list_repositories(None, "team/app\x00") == ["team/zz"]
        assert await store.list_repositories(None, "\x00") == ["team/app", "team/zz"]
        assert await store.list_repositories(None, "team/" + "p" * 300) == ["team/zz"]

    async def test_referrers_of_an_artifact_type_no_manifest_could_have_are_none(
        self, store: MetadataStore
    ) -> None:
        subject = digest("subject")
        longest = "application/" + "x" * (ARTIFACT_TYPE_MAX - len("application/"))
        signature = image("team/app", "sig", subject=subject, artifact_type=SIGNATURE)
        kept = image("team/app", "long", subject=subject, artifact_type=longest)
        for manifest in (signature, kept):
            await put(store, manifest, [], None)
        for artifact_type in (SIGNATURE + "\x00", "\x00", longest + "x"):
            assert await store.list_referrers("team/app", subject, artifact_type) == []
        assert await store.list_referrers("team/app", subject, longest) == [kept]

    async def test_annotations_with_nul_are_kept(self, store: MetadataStore) -> None:
        """Annotations are JSON text, where a NUL is an escape: every store keeps it."""
        manifest = replace(image("team/app", "m"), annotations=json.dumps({"a\x00": "b\x00"}))
        await put(store, manifest, [], "latest")
        assert await store.get_manifest("team/app", "latest") == manifest

    async def test_an_upload_named_with_nul_is_none(self, store: MetadataStore) -> None:
        await store.create_upload("a" * 32, "team/app")
        assert await store.get_upload("team/app", "a" * 32 + "\x00") is None
        assert await store.get_upload("team/app\x00", "a" * 32) is None

    async def test_index_with_child_manifests(self, store: MetadataStore) -> None:
        await put(store, image("team/app", "amd64"), [], None)
        await put(store, image("team/app", "arm64"), [], None)
        index = image("team/app", "index", media_type=INDEX)
        references = [child("amd64"), child("arm64")]
        assert await store.missing_references("team/app", references) == []
        await put(store, index, references, "latest")
        assert await store.get_manifest("team/app", "latest") == index

    # search

    async def test_manifest_description_is_stored(self, store: MetadataStore) -> None:
        manifest = image("team/app", "m", description="A web server")
        await put(store, manifest, [], "latest")
        found = await store.get_manifest("team/app", "latest")
        assert found is not None
        assert found.description == "A web server"

    async def test_search_matches_name_or_description_ignoring_case(
        self, store: MetadataStore
    ) -> None:
        await put(store, image("library/nginx", "a", description="Web Server"), [], "1")
        await put(store, image("team/apache", "b", description="HTTP server"), [], "1")
        await put(store, image("team/postgres", "c", description="A database"), [], "1")
        await put(store, image("team/tools", "d"), [], "1")

        async def names(query: str) -> list[str]:
            found = await store.search_repositories(query, None, 100)
            assert await store.count_search_matches(query, 100) == len(found)
            return [summary.name for summary in found]

        assert await names("server") == ["library/nginx", "team/apache"]
        assert await names("SERVER") == ["library/nginx", "team/apache"]
        assert await names("team/") == ["team/apache", "team/postgres", "team/tools"]
        assert await names("TEAM/P") == ["team/postgres"]
        assert await names("a database") == ["team/postgres"]
        assert await names("nothing like it") == []
        assert await names("") == ["library/nginx", "team/apache", "team/postgres", "team/tools"]
        assert await names("X") == ["library/nginx"]
        assert await names("Db") == []
        assert await store.search_repositories("nginx", None, 10) == [
            RepositorySummary("library/nginx", "Web Server")
        ]
        assert await store.search_repositories("tools", None, 10) == [
            RepositorySummary("team/tools", None)
        ]

    async def test_search_takes_wildcards_literally(self, store: MetadataStore) -> None:
        await put(store, image("a_b", "1", description="100% pure"), [], "1")
        await put(store, image("axb", "2", description="1000 pure"), [], "1")
        await put(store, image("a/b", "3", description="back\\slash"), [], "1")
        await put(store, image("ayb", "4", description="10%% pure"), [], "1")
        for query, expected in [
            ("a_b", ["a_b"]),
            ("_", ["a_b"]),
            ("0%", ["a_b", "ayb"]),
            ("0% p", ["a_b"]),
            ("%", ["a_b", "ayb"]),
            ("%%", ["ayb"]),
            ("a/b", ["a/b"]),
            ("/", ["a/b"]),
            ("\\", ["a/b"]),
            ("k\\s", ["a/b"]),
            ("a\x00", []),
            ("a\x00b", []),
        ]:
            found = await store.search_repositories(query, None, 10)
            assert [summary.name for summary in found] == expected, query
            assert await store.count_search_matches(query, 10) == len(expected), query

    async def test_search_takes_index_syntax_literally(self, store: MetadataStore) -> None:
        """What a full-text index would read as operators (quotes, *, NEAR, ^, AND, columns)
        is text to find like any other."""
        described = 'say "hi" * NEAR(a b) ^x OR y: z - AND: "'
        await put(store, image("team/quoted", "1", description=described), [], "1")
        await put(store, image("team/plain", "2", description="say hi to NEAR a b"), [], "1")
        await put(store, image("team/ünïcode", "3", description="Grüße ✓ 日本語"), [], "1")
        for query, expected in [
            ('"hi"', ["team/quoted"]),
            ('"', ["team/quoted"]),
            ('""', []),
            ("* NEAR(", ["team/quoted"]),
            ("NEAR", ["team/plain", "team/quoted"]),
            ("NEAR(a b)", ["team/quoted"]),
            ("^x OR", ["team/quoted"]),
            ("y: z", ["team/quoted"]),
            ("description:", []),
            ("name:team", []),
            ("- AND:", ["team/quoted"]),
            ("hi AND b", []),
            ("ünï", ["team/ünïcode"]),
            ("ße ✓ 日本", ["team/ünïcode"]),
            ("日本語", ["team/ünïcode"]),
            ("x" * 5000, []),
            ("say" * 2000, []),
        ]:
            found = await store.search_repositories(query, None, 10)
            assert [summary.name for summary in found] == expected, query
            assert await store.count_search_matches(query, 10) == len(expected), query

    async def test_search_lists_only_repositories_holding_a_manifest(
        self, store: MetadataStore
    ) -> None:
        await put(store, image("team/app", "m"), [], "latest")
        await link(store, "team/blob-only", digest("layer"), 1)
        await store.create_upload("a" * 32, "team/upload-only")
        await put(store, image("team/deleted", "m", description="gone"), [], "latest")
        await store.delete_manifest("team/deleted", digest("m"))
        for query in ["", "team", "te", "only", "deleted"]:
            found = await store.search_repositories(query, None, 10)
            expected = [RepositorySummary("team/app", None)] if "team".startswith(query) else []
            assert found == expected, query
            assert await store.count_search_matches(query, 10) == len(expected), query
        assert await store.search_repositories("gone", None, 10) == []

    async def test_search_pages_in_lexical_order(self, store: MetadataStore) -> None:
        names = ["a", "a-b", "a.b", "a0/x", "a_b/x", "a/b", "a/b/c", "ab", "z9", "B", "_"]
        for name in names:
            await put(store, image(name, "m"), [], "latest")
        expected = sorted(names)
        pages: list[str] = []
        last: str | None = None
        while found := await store.search_repositories("", last, 4):
            assert len(found) <= 4
            pages += [summary.name for summary in found]
            last = found[-1].name
        assert pages == expected
        assert await store.search_repositories("", "z9", 4) == []
        assert await store.search_repositories("", "a\x00", 2) == [
            RepositorySummary(name, None) for name in expected[expected.index("a") + 1 :][:2]
        ]
        assert await store.search_repositories("", None, 0) == []
        found = await store.search_repositories("A", "a.b", 3)
        matching = [name for name in expected if "a" in name.lower() and name > "a.b"]
        assert [summary.name for summary in found] == matching[:3]

    async def test_search_counts_up_to_one_past_the_cap(self, store: MetadataStore) -> None:
        for n in range(6):
            await put(store, image(f"team/app{n}", "m", description=f"about {n}"), [], "1")
        await put(store, image("other", "m"), [], "1")
        for query, matching in [("team/app", 6), ("app", 6), ("ap", 6), ("", 7), ("bout 3", 1)]:
            assert await store.count_search_matches(query, 2) == min(matching, 3), query
            assert await store.count_search_matches(query, 6) == min(matching, 7), query
            assert await store.count_search_matches(query, 100) == matching, query
            assert await store.count_search_matches(query, 0) == min(matching, 1), query

    async def test_search_description_is_the_newest_manifests(self, store: MetadataStore) -> None:
        """Newest is the latest pushed (created_at) manifest that has a description; pointing a
        tag at an older manifest does not change it."""
        first = image("team/app", "first", description="first")
        await put(store, first, [], "latest")
        await put(store, image("team/app", "second", description="second"), [], "latest")
        await put(store, image("team/app", "undescribed"), [], "latest")
        assert await store.search_repositories("", None, 10) == [
            RepositorySummary("team/app", "second")
        ]
        await put(store, first, [], "latest")  # pushed again: the record is the same
        assert await store.search_repositories("first", None, 10) == []
        [summary] = await store.search_repositories("", None, 10)
        assert summary.description == "second"
        await store.delete_manifest("team/app", digest("second"))
        [summary] = await store.search_repositories("", None, 10)
        assert summary.description == "first"
        assert await store.search_repositories("second", None, 10) == []

    async def test_search_finds_a_repository_by_its_description_as_it_changes(
        self, store: MetadataStore
    ) -> None:
        """Through the index: a newer manifest's description replaces the older one's, and
        deleting it brings the older one back; a deleted repository is found no more."""

        async def found(query: str) -> list[str]:
            count = await store.count_search_matches(query, 10)
            names = [summary.name for summary in await store.search_repositories(query, None, 10)]
            assert count == len(names), query
            return names

        await put(store, image("team/other", "o", description="unrelated words"), [], "1")
        await put(store, image("team/app", "old", description="Alpha Centauri"), [], "1")
        assert await found("alpha cent") == ["team/app"]
        await put(store, image("team/app", "new", description="Betelgeuse"), [], "2")
        assert await found("alpha cent") == []
        assert await found("TELGEU") == ["team/app"]
        await store.delete_manifest("team/app", digest("new"))
        assert await found("alpha cent") == ["team/app"]
        assert await found("telgeu") == []
        await store.delete_manifest("team/app", digest("old"))
        assert await found("alpha cent") == []
        assert await found("team/") == ["team/other"]

    # reservations: how a writer stores bytes that no collector can take away

    async def test_a_reserved_blob_is_stored_once_recorded(self, store: MetadataStore) -> None:
        token = uuid.uuid4().hex
        assert await store.reserve_blob(digest("layer"), 10, token) is Reservation.ABSENT
        assert await store.blob_size(digest("layer")) is None  # not stored until recorded
        await store.link_blob("team/app", digest("layer"), 10, token)
        assert await store.blob_size(digest("layer")) == 10
        assert await store.linked_blob_size("team/app", digest("layer")) == 10
        again = uuid.uuid4().hex
        assert await store.reserve_blob(digest("layer"), 10, again) is Reservation.STORED
        await store.release_blob(again)
        await store.release_blob(again)  # ended already: no error

    async def test_recording_needs_a_live_reservation(self, store: MetadataStore) -> None:
        token = await reserve(store, digest("layer"), 10)
        await store.release_blob(token)
        with pytest.raises(Conflict):
            await store.link_blob("team/app", digest("layer"), 10, token)
        with pytest.raises(Conflict):
            await store.complete_upload("c" * 32, "team/app", digest("layer"), 10, token)
        manifest = image("team/app", "m")
        with pytest.raises(Conflict):
            await store.put_manifest(manifest, [], "latest", token)
        assert await store.linked_blob_size("team/app", digest("layer")) is None
        assert await store.get_manifest("team/app", "latest") is None

    async def test_a_reservation_records_one_blob_once(self, store: MetadataStore) -> None:
        token = await reserve(store, digest("layer"), 10)
        with pytest.raises(Conflict):
            await store.link_blob("team/app", digest("other"), 10, token)
        await store.link_blob("team/app", digest("layer"), 10, token)
        with pytest.raises(Conflict):
            await store.link_blob("team/other", digest("layer"), 10, token)

    # unreserved records: a writer that can write the bytes again saves the reservation

    async def test_an_unreserved_blob_is_stored_once_recorded(self, store: MetadataStore) -> None:
        claim = await store.check_blob(digest("layer"))
        assert claim is not None
        assert not claim.stored
        assert await store.blob_size(digest("layer")) is None  # checking writes nothing
        await store.link_blob("team/app", digest("layer"), 10, claim)
        assert await store.linked_blob_size("team/app", digest("layer")) == 10
        again = await store.check_blob(digest("layer"))
        assert again is not None
        assert again.stored
        manifest = image("team/app", "m")
        claim = await store.check_blob(manifest.digest)
        assert claim is not None
        await store.put_manifest(manifest, [], "latest", claim)
        assert await store.get_manifest("team/app", "latest") == manifest

    async def test_an_unreserved_record_fails_once_a_collector_forgot_a_blob(
        self, store: MetadataStore
    ) -> None:
        # Its bytes may have been deleted between their write and its record.
        claim = await store.check_blob(digest("layer"))
        assert claim is not None
        assert await store.claim_orphans({digest("layer"): 10}, "gc") == [digest("layer")]
        await store.forget_blobs([digest("layer")], "gc")
        with pytest.raises(Unrecordable):
            await store.link_blob("team/app", digest("layer"), 10, claim)
        with pytest.raises(Unrecordable):
            await store.complete_upload("c" * 32, "team/app", digest("layer"), 10, claim)
        assert await store.linked_blob_size("team/app", digest("layer")) is None
        assert await store.blob_size(digest("layer")) is None
        fresh = await store.check_blob(digest("layer"))
        assert fresh is not None
        await store.link_blob("team/app", digest("layer"), 10, fresh)
        assert await store.linked_blob_size("team/app", digest("layer")) == 10

    async def test_a_forget_that_removed_no_record_fails_no_unreserved_record(
        self, store: MetadataStore
    ) -> None:
        claim = await store.check_blob(digest("layer"))
        assert claim is not None
        await store.forget_blobs([digest("layer")], "gc")  # nothing of its mark: nothing forgotten
        await store.link_blob("team/app", digest("layer"), 10, claim)
        assert await store.linked_blob_size("team/app", digest("layer")) == 10

    async def test_an_unreserved_record_of_a_blob_being_collected_fails(
        self, store: MetadataStore
    ) -> None:
        claim = await store.check_blob(digest("layer"))
        assert claim is not None
        assert await store.claim_orphans({digest("layer"): 10}, "gc") == [digest("layer")]
        assert await store.check_blob(digest("layer")) is None  # reserve, and wait for it
        with pytest.raises(Unrecordable):
            await store.link_blob("team/app", digest("layer"), 10, claim)
        manifest = image("team/app", "m")
        early = await store.check_blob(manifest.digest)
        assert early is not None
        assert await store.claim_orphans({manifest.digest: manifest.size}, "gc") == [
            manifest.digest
        ]
        with pytest.raises(Unrecordable):
            await store.put_manifest(manifest, [], "latest", early)
        assert await store.get_manifest("team/app", "latest") is None

    async def test_an_unreserved_record_that_found_the_bytes_stored_needs_them_stored(
        self, store: MetadataStore
    ) -> None:
        # A writer that found the blob stored wrote nothing: a pending blob (a reservation's,
        # whose bytes may not be there yet) does not do for it.
        await reserve(store, digest("layer"), 10)
        claim = await store.check_blob(digest("layer"))
        assert claim is not None
        assert not claim.stored
        found_stored = replace(claim, stored=True)
        with pytest.raises(Unrecordable):
            await store.link_blob("team/app", digest("layer"), 10, found_stored)
        await store.link_blob("team/app", digest("layer"), 10, claim)  # wrote them itself
        assert await store.linked_blob_size("team/app", digest("layer")) == 10

    async def test_mount_links_a_stored_blob_the_source_can_read(
        self, store: MetadataStore
    ) -> None:
        await link(store, "team/app", digest("layer"), 10)
        assert await store.mount_blob("team/copy", digest("layer"), "team/app") == 10
        assert await store.linked_blob_size("team/copy", digest("layer")) == 10
        assert await store.mount_blob("team/none", digest("layer"), "team/absent") is None
        assert await store.mount_blob("team/none", digest("other"), "team/app") is None
        await reserve(store, digest("pending"), 5)  # reserved, never recorded
        assert await store.mount_blob("team/none", digest("pending"), "team/app") is None
        assert await store.repository_exists("team/none") is False

    async def test_put_manifest_with_a_missing_reference_stores_nothing(
        self, store: MetadataStore
    ) -> None:
        await link(store, "team/app", digest("config"), 10)
        await put(store, image("team/app", "child"), [], None)
        manifest = image("team/app", "m", media_type=INDEX)
        token = await reserve(store, manifest.digest, manifest.size)
        references = [blob("config"), blob("layer"), child("child"), child("absent")]
        with pytest.raises(Missing) as missing:
            await store.put_manifest(manifest, references, "latest", token)
        assert sorted(missing.value.digests) == sorted([digest("layer"), digest("absent")])
        assert await store.get_manifest("team/app", "latest") is None
        assert await store.blob_size(manifest.digest) is None
        await link(store, "team/app", digest("layer"), 10)
        await put(store, image("team/app", "absent"), [], None)
        await store.put_manifest(manifest, references, "latest", token)  # the token still holds
        assert await store.get_manifest("team/app", "latest") == manifest

    # the outbox and the audit log

    async def test_changes_write_their_journal_in_their_transaction(
        self, store: MetadataStore
    ) -> None:
        await store.link_blob(
            "team/app",
            digest("layer"),
            10,
            await reserve(store, digest("layer"), 10),
            journal("push-blob"),
        )
        await store.create_upload("u" * 32, "team/app")
        await store.complete_upload(
            "u" * 32,
            "team/app",
            digest("config"),
            5,
            await reserve(store, digest("config"), 5),
            journal("push-config"),
        )
        await store.mount_blob("team/copy", digest("layer"), "team/app", journal("mount"))
        await put(store, image("team/app", "v1"), [blob("layer")], "latest", journal("push"))
        await store.delete_tag("team/app", "latest", journal("delete-tag"))
        await store.delete_manifest("team/app", digest("v1"), journal("delete"))
        await store.unlink_blob("team/app", digest("layer"), journal("unlink"))

        expected = ["push-blob", "push-config", "mount", "push", "delete-tag", "delete", "unlink"]
        assert await actions(store) == expected
        assert [a for a, _ in await audited(store)] == expected

    async def test_what_changes_nothing_writes_no_journal(self, store: MetadataStore) -> None:
        await link(store, "team/app", digest("layer"), 10)
        mounted = await store.mount_blob("team/copy", digest("layer"), "team/absent", journal("m"))
        assert mounted is None
        assert not await store.delete_manifest("team/app", digest("absent"), journal("d"))
        assert not await store.delete_tag("team/app", "absent", journal("t"))
        assert not await store.unlink_blob("team/app", digest("absent"), journal("u"))
        manifest = image("team/app", "m")
        token = await reserve(store, manifest.digest, manifest.size)
        with pytest.raises(Missing):
            await store.put_manifest(manifest, [blob("absent")], "v1", token, journal("push"))

        assert await actions(store) == []
        assert await audited(store) == []

    async def test_a_push_that_moves_a_tag_is_audited_as_a_tag_move(
        self, store: MetadataStore
    ) -> None:
        await put(store, image("team/app", "v1"), [], "latest", journal("push"))
        await put(store, image("team/app", "v1"), [], "latest", journal("push"))
        await put(store, image("team/app", "v2"), [], "latest", journal("push"))

        assert await audited(store) == [("push", None), ("push", None), (TAG_MOVED, digest("v1"))]
        assert await actions(store) == ["push", "push", "push"]

    async def test_events_wait_per_endpoint_in_order_until_delivered(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        await store.record(journal("pull", ("a", "b")))
        await put(store, image("team/app", "v1"), [], None, journal("push", ("a",)))
        await other_store.record(journal("pull-b", ("b",)))

        assert await actions(store, "a") == ["pull", "push"]
        assert await actions(store, "b") == ["pull", "pull-b"]
        first = await store.pending_events("a", 1)
        assert [json.loads(e.payload)["action"] for e in first] == ["pull"]
        await other_store.delete_events([e.id for e in first])
        await other_store.delete_events([e.id for e in first])  # delivered twice: no error
        assert await actions(store, "a") == ["push"]
        assert await actions(store, "b") == ["pull", "pull-b"]

    async def test_a_row_of_several_events_comes_back_whole(self, store: MetadataStore) -> None:
        # Pulls are written a batch to a row (registry.events.PULLS).
        pull = (Target("team/app", "sha256:" + "a" * 64), Origin(None, "192.0.2.1"), 0)
        (row,) = Renderer([EndpointRules("a")]).pull_notices([pull] * 3)
        batch = row.payload
        await store.record(Journal((Notice("a", batch), Notice("a", '{"action":"push"}'))))

        assert [e.payload for e in await store.pending_events("a", 10)] == [
            batch,
            '{"action":"push"}',
        ]

    async def test_audit_entries_are_filtered_and_pruned_oldest_first(
        self, store: MetadataStore
    ) -> None:
        start = datetime.now(UTC) - timedelta(days=10)
        entries = [
            AuditEntry(start + timedelta(days=day), action, actor, "192.0.2.1", repository)
            for day, action, actor, repository in [
                (0, "push", "alice", "team/app"),
                (1, "delete", "bob", "team/app"),
                (2, "login-failed", None, None),
                (3, "push", "alice", "team/web"),
            ]
        ]
        await store.record(Journal(audit=tuple(entries)))

        def days(found: list[Any]) -> list[int]:
            return [(r.entry.at - start).days for r in found]

        assert days(await store.audit_entries(AuditQuery())) == [0, 1, 2, 3]
        assert days(await store.audit_entries(AuditQuery(actor="alice"))) == [0, 3]
        assert days(await store.audit_entries(AuditQuery(repository="team/app"))) == [0, 1]
        assert days(await store.audit_entries(AuditQuery(action="push"))) == [0, 3]
        window = AuditQuery(since=start + timedelta(hours=12), until=start + timedelta(days=3))
        assert days(await store.audit_entries(window)) == [1, 2]
        assert days(await store.audit_entries(AuditQuery(limit=2))) == [2, 3]
        found = (await store.audit_entries(AuditQuery(action="login-failed")))[0].entry
        assert found == entries[2]

        assert await store.prune_audit(start + timedelta(days=2, hours=1), 2) == 2
        assert days(await store.audit_entries(AuditQuery())) == [2, 3]
        assert await store.prune_audit(start + timedelta(days=2, hours=1), 2) == 1
        assert days(await store.audit_entries(AuditQuery())) == [3]

    async def test_collected_manifests_are_audited_with_their_collection(
        self, store: MetadataStore
    ) -> None:
        for name in ("old", "older"):
            await put(store, image("team/app", name), [], None)
        template = AuditEntry(datetime.now(UTC), "gc-delete", "gc")

        deleted = await store.delete_manifests(
            {"team/app": [digest("old"), digest("older")]}, future(), True, template
        )

        found = await store.audit_entries(AuditQuery(action="gc-delete"))
        assert sorted(r.entry.digest for r in found if r.entry.digest) == deleted["team/app"]
        assert {r.entry.repository for r in found} == {"team/app"}

    # garbage collection

    async def test_gc_snapshot_reads_the_whole_graph(self, store: MetadataStore) -> None:
        await link(store, "team/app", digest("layer"), 10)
        subject = image("team/app", "subject")
        await put(store, subject, [blob("layer")], "latest")
        await put(store, image("team/app", "sig", subject=subject.digest), [], None)
        await store.create_upload("a" * 32, "team/app")
        pending = await reserve(store, digest("pending"), 3)
        snapshot = await store.gc_snapshot()
        assert {(m.repository, m.digest, m.subject) for m in snapshot.manifests} == {
            ("team/app", subject.digest, None),
            ("team/app", digest("sig"), subject.digest),
        }
        assert [(t.repository, t.name, t.digest) for t in snapshot.tags] == [
            ("team/app", "latest", subject.digest)
        ]
        assert [(r.repository, r.manifest, r.digest, r.kind) for r in snapshot.references] == [
            ("team/app", subject.digest, digest("layer"), ReferenceKind.BLOB)
        ]
        assert {link.digest for link in snapshot.links} == {
            digest("layer"),
            subject.digest,
            digest("sig"),
        }
        states = {b.digest: (b.size, b.state) for b in snapshot.blobs}
        assert states[digest("layer")] == (10, BlobState.STORED)
        assert states[digest("pending")] == (3, BlobState.PENDING)
        assert [r.digest for r in snapshot.reservations] == [digest("pending")]
        assert [u.id for u in snapshot.uploads] == ["a" * 32]
        assert all(m.created_at.tzinfo is not None for m in snapshot.manifests)
        await store.release_blob(pending)

    # what the collector reads, a page at a time

    async def test_repository_names_pages_every_repository(self, store: MetadataStore) -> None:
        for name in ("b", "a/x", "c"):
            await link(store, name, digest(name), 1)  # no manifest: listed all the same
        assert await store.repository_names(None, 2) == ["a/x", "b"]
        assert await store.repository_names("b", 2) == ["c"]
        assert await store.repository_names("c", 2) == []

    async def test_manifest_candidates_are_untagged_old_and_not_needed_directly(
        self, store: MetadataStore
    ) -> None:
        await link(store, "team/app", digest("layer"), 10)
        for name in ("tagged", "child", "loose", "old index child"):
            await put(store, image("team/app", name), [], None)
        await put(store, image("team/app", "tagged"), [], "latest")
        await put(store, image("team/app", "index", media_type=INDEX), [child("child")], "1.0")
        await put(store, image("team/app", "referrer", subject=digest("tagged")), [], None)
        await put(store, image("team/app", "loose referrer", subject=digest("loose")), [], None)
        await put(store, image("team/app", "lost referrer", subject=digest("absent")), [], None)
        old_index = image("team/app", "old index", media_type=INDEX)
        await put(store, old_index, [child("old index child"), blob("layer")], None)
        await put(store, image("team/other", "elsewhere"), [], None)

        assert await store.manifest_candidates(["team/app"], past()) == []
        found = await store.manifest_candidates(["team/app", "team/other", "absent"], future())
        assert found == sorted(
            [
                ManifestCandidate("team/app", digest("loose"), None, (), ()),
                ManifestCandidate("team/app", digest("loose referrer"), digest("loose"), (), ()),
                ManifestCandidate("team/app", digest("lost referrer"), None, (), ()),
                ManifestCandidate(
                    "team/app",
                    digest("old index"),
                    None,
                    (),
                    tuple(sorted([digest("old index child"), digest("layer")])),
                ),
                ManifestCandidate(
                    "team/app", digest("old index child"), None, (digest("old index"),), ()
                ),
                ManifestCandidate("team/other", digest("elsewhere"), None, (), ()),
            ],
            key=lambda c: (c.repository, c.digest),
        )

    async def test_dangling_tags_are_none_where_every_tag_has_its_manifest(
        self, store: MetadataStore
    ) -> None:
        await put(store, image("team/app", "m"), [], "latest")
        assert await store.dangling_tags(["team/app", "absent"]) == {}

    async def test_unreferenced_links_are_old_unreferenced_and_no_manifest(
        self, store: MetadataStore
    ) -> None:
        for name in ("config", "loose", "other loose"):
            await link(store, "team/app", digest(name), 10)
        await link(store, "team/other", digest("loose"), 10)
        await put(store, image("team/app", "m"), [blob("config")], None)
        assert await store.unreferenced_links(["team/app", "team/other"], past()) == {}
        assert await store.unreferenced_links(["team/app", "team/other"], future()) == {
            "team/app": sorted([digest("loose"), digest("other loose")]),
            "team/other": [digest("loose")],
        }
        assert await store.links_made_before("team/app", [digest("config")], future()) == [
            digest("config")
        ]
        assert await store.links_made_before("team/app", [digest("m")], future()) == []
        assert await store.links_made_before("team/app", [digest("config")], past()) == []
        assert await store.manifests_referencing("team/app", digest("config"), 5) == [digest("m")]
        assert await store.manifests_referencing("team/other", digest("config"), 5) == []

    async def test_garbage_blobs_are_what_nothing_links_references_or_reserves(
        self, store: MetadataStore
    ) -> None:
        for name in ("linked", "referenced", "reserved", "garbage", "more garbage"):
            await link(store, "team/app", digest(name), len(name))
        await put(store, image("team/app", "m"), [blob("referenced")], None)
        for name in ("referenced", "reserved", "garbage", "more garbage"):
            await store.unlink_blob("team/app", digest(name))
        holding = await reserve(store, digest("reserved"), 8)
        garbage = {digest("garbage"): 7, digest("more garbage"): 12}
        assert await store.garbage_blobs(past(), past(), None, 10) == {}
        assert await store.garbage_blobs(future(), past(), None, 10) == garbage
        first, second = sorted(garbage)
        assert await store.garbage_blobs(future(), past(), None, 1) == {first: garbage[first]}
        assert await store.garbage_blobs(future(), past(), first, 10) == {second: garbage[second]}
        # A reservation made before reserved_since no longer holds its blob.
        assert digest("reserved") in await store.garbage_blobs(future(), future(), None, 10)
        assert await store.expired_reservations(future()) == 1
        assert await store.expired_reservations(past()) == 0
        wanted = [digest(name) for name in ("linked", "referenced", "reserved", "garbage")]
        assert await store.releasable_blobs(wanted, future(), past()) == {
            digest("linked"): 6,
            digest("referenced"): 10,
            digest("garbage"): 7,
        }
        holders = await store.blob_holders(digest("referenced"), 5)
        assert holders == Holders((), (("team/app", digest("m")),))
        assert (await store.blob_holders(digest("linked"), 5)).links == ("team/app",)
        assert await store.recorded_blobs([*wanted, digest("absent")]) == set(wanted)
        await store.release_blob(holding)

    async def test_upload_sessions_and_expired_uploads(self, store: MetadataStore) -> None:
        for upload_id in ("a" * 32, "b" * 32):
            await store.create_upload(upload_id, "team/app")
        found = await store.upload_sessions(["a" * 32, "c" * 32])
        assert list(found) == ["a" * 32]
        assert past() < found["a" * 32] < future()
        assert await store.expired_uploads(past(), None, 10) == []
        assert await store.expired_uploads(future(), None, 1) == ["a" * 32]
        assert await store.expired_uploads(future(), "a" * 32, 10) == ["b" * 32]

    async def test_delete_manifests_deletes_only_what_nothing_needs(
        self, store: MetadataStore
    ) -> None:
        for name in ("tagged", "child", "orphan", "loose", "subject", "old index child"):
            await put(store, image("team/app", name), [], None)
        await put(store, image("team/app", "tagged"), [], "latest")
        await put(store, image("team/app", "index", media_type=INDEX), [child("child")], "1.0")
        referrer = image("team/app", "referrer", subject=digest("tagged"))
        await put(store, referrer, [], None)
        orphan_referrer = image("team/app", "orphan referrer", subject=digest("loose"))
        await put(store, orphan_referrer, [], None)
        old_index = image("team/app", "old index", media_type=INDEX)
        await put(store, old_index, [child("old index child")], None)
        candidates = {
            digest(name)
            for name in (
                "tagged",
                "child",
                "orphan",
                "loose",
                "referrer",
                "orphan referrer",
                "old index",
                "old index child",
            )
        }
        await put(store, image("team/other", "orphan"), [], None)
        await put(store, image("team/other", "tagged"), [], "latest")
        # One call for both repositories: what stays is decided per repository.
        garbage = {"team/app": candidates, "team/other": {digest("orphan"), digest("tagged")}}
        assert await store.delete_manifests(garbage, past(), True) == {}
        deleted = await store.delete_manifests(garbage, future(), True)
        assert deleted == {
            "team/app": sorted(
                digest(name)
                for name in ("orphan", "loose", "orphan referrer", "old index", "old index child")
            ),
            "team/other": [digest("orphan")],
        }
        for name in ("orphan", "old index", "old index child"):
            assert await store.get_manifest("team/app", digest(name)) is None
            assert await store.linked_blob_size("team/app", digest(name)) is None
        for name in ("tagged", "child", "index", "referrer"):
            assert await store.get_manifest("team/app", digest(name)) is not None
        referrer_only = {"team/app": [digest("referrer")]}
        assert await store.delete_manifests(referrer_only, future(), False) == referrer_only
        assert await store.delete_manifests({"absent": candidates}, future(), True) == {}
        assert await store.delete_dangling_tags(["team/app", "team/other", "absent"]) == {}
        assert await store.list_tags("team/app", None, None) == ["1.0", "latest"]

    async def test_delete_manifests_drops_their_references(self, store: MetadataStore) -> None:
        await link(store, "team/app", digest("layer"), 10)
        await put(store, image("team/app", "m"), [blob("layer")], None)
        assert await store.delete_links({"team/app": [digest("layer")]}, future()) == {}
        await store.delete_manifests({"team/app": [digest("m")]}, future(), True)
        assert await store.delete_links({"team/app": [digest("layer")]}, future()) == {
            "team/app": [digest("layer")]
        }
        assert await store.linked_blob_size("team/app", digest("layer")) is None

    async def test_delete_links_keeps_what_a_manifest_needs(self, store: MetadataStore) -> None:
        for name in ("config", "loose", "young"):
            await link(store, "team/app", digest(name), 10)
        for name in ("loose", "config", "stray"):
            await link(store, "team/other", digest(name), 10)
        await put(store, image("team/app", "m"), [blob("config")], None)
        # In team/other it is "loose" that a manifest references: links are judged per
        # repository, though one call covers both.
        await put(store, image("team/other", "n"), [blob("loose")], None)
        wanted = [digest(name) for name in ("config", "loose", "m", "absent")]
        links = {"team/app": wanted, "team/other": [*wanted, digest("stray")]}
        assert await store.delete_links(links, past()) == {}
        assert await store.delete_links(links, future()) == {
            "team/app": [digest("loose")],
            "team/other": sorted([digest("config"), digest("stray")]),
        }
        assert await store.linked_blob_size("team/app", digest("loose")) is None
        assert await store.linked_blob_size("team/other", digest("loose")) == 10
        assert await store.linked_blob_size("team/app", digest("young")) == 10
        assert await store.delete_links({"absent": wanted}, future()) == {}

    async def test_mark_blobs_marks_only_blobs_nothing_uses(self, store: MetadataStore) -> None:
        for name in ("linked", "referenced", "reserved", "garbage"):
            await link(store, "team/app", digest(name), len(name))
        await put(store, image("team/app", "m"), [blob("referenced")], None)
        for name in ("referenced", "reserved", "garbage"):
            await store.unlink_blob("team/app", digest(name))
        holding = await reserve(store, digest("reserved"), 8)
        names = ("linked", "referenced", "reserved", "garbage", "absent")
        wanted = [digest(name) for name in names]
        assert await store.mark_blobs(wanted, past(), "gc-1") == {}
        assert await store.mark_blobs(wanted, future(), "gc-1") == {digest("garbage"): 7}
        # Marked: no writer may reserve it, nor may another collector mark it (its mark is fresh).
        assert await store.reserve_blob(digest("garbage"), 7, "w") is Reservation.BUSY
        assert await store.mark_blobs(wanted, future(), "gc-2") == {}
        assert await store.blob_size(digest("garbage")) is None
        await store.forget_blobs([digest("garbage")], "gc-2")  # not its mark
        assert digest("garbage") in {b.digest for b in (await store.gc_snapshot()).blobs}
        await store.forget_blobs([digest("garbage")], "gc-1")
        assert digest("garbage") not in {b.digest for b in (await store.gc_snapshot()).blobs}
        assert await store.reserve_blob(digest("garbage"), 7, "w") is Reservation.ABSENT
        await store.release_blob("w")
        await store.release_blob(holding)
        assert await store.mark_blobs(wanted, future(), "gc-3") == {
            digest("reserved"): 8,
            digest("garbage"): 7,
        }

    async def test_pending_blobs_without_a_reservation_are_garbage(
        self, store: MetadataStore
    ) -> None:
        token = await reserve(store, digest("crashed"), 5)
        assert await store.mark_blobs([digest("crashed")], future(), "gc") == {}
        assert await store.drop_reservations(past()) == 0
        assert await store.drop_reservations(future()) == 1
        assert await store.mark_blobs([digest("crashed")], future(), "gc") == {digest("crashed"): 5}
        with pytest.raises(Conflict):
            await store.link_blob("team/app", digest("crashed"), 5, token)

    async def test_claim_orphans_claims_only_bytes_without_a_record(
        self, store: MetadataStore
    ) -> None:
        await link(store, "team/app", digest("recorded"), 10)
        await reserve(store, digest("pending"), 10)
        sizes = {digest("recorded"): 10, digest("pending"): 10, digest("orphan"): 4}
        assert await store.claim_orphans(sizes, "gc") == [digest("orphan")]
        assert await store.claim_orphans(sizes, "gc") == []
        assert await store.reserve_blob(digest("orphan"), 4, "w") is Reservation.BUSY
        await store.forget_blobs([digest("orphan")], "gc")
        assert await store.reserve_blob(digest("orphan"), 4, "w") is Reservation.ABSENT

    async def test_expire_uploads_deletes_only_sessions_idle_since_then(
        self, store: MetadataStore
    ) -> None:
        await store.create_upload("a" * 32, "team/app")
        await store.create_upload("b" * 32, "team/app")
        ids = ["a" * 32, "b" * 32, "c" * 32]
        assert await store.expire_uploads(ids, past()) == []
        assert await store.expire_uploads(["a" * 32, "c" * 32], future()) == ["a" * 32]
        assert await store.get_upload("team/app", "a" * 32) is None
        assert await store.get_upload("team/app", "b" * 32) is not None

    async def test_leases(self, store: MetadataStore, other_store: MetadataStore) -> None:
        minute = timedelta(minutes=1)
        lease = await store.acquire_lease("gc", "one", minute)
        assert (lease.name, lease.holder) == ("gc", "one")
        assert (await other_store.acquire_lease("gc", "two", minute)).holder == "one"
        renewed = await store.acquire_lease("gc", "one", 2 * minute)
        assert renewed.holder == "one"
        assert renewed.expires_at > lease.expires_at
        await other_store.release_lease("gc", "two")  # not its lease: no effect
        assert (await other_store.acquire_lease("gc", "two", minute)).holder == "one"
        await store.release_lease("gc", "one")
        assert (await other_store.acquire_lease("gc", "two", timedelta(0))).holder == "two"
        assert (await store.acquire_lease("gc", "one", minute)).holder == "one"  # expired
        assert (await store.acquire_lease("other", "two", minute)).holder == "two"

    # garbage collection racing writers, as other worker processes or instances would

    async def test_workers_reserving_a_blob_while_a_collector_marks_it(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        for round_ in range(6):
            name = f"layer {round_}"
            await link(store, "team/app", digest(name), 10)
            await store.unlink_blob("team/app", digest(name))

            def writer(target: MetadataStore, token: str, name: str = name) -> Call[Reservation]:
                return lambda: target.reserve_blob(digest(name), 10, token)

            def collector(token: str, name: str = name) -> Call[dict[str, int]]:
                return lambda: other_store.mark_blobs([digest(name)], future(), token)

            calls: list[Call[Any]] = [writer(store, f"w{round_}-{n}") for n in range(4)]
            calls.insert(round_ % 5, collector(f"gc{round_}"))
            done, errors = in_workers(calls)
            assert errors == []
            [marked] = [outcome for outcome in done if isinstance(outcome, dict)]
            reservations = [outcome for outcome in done if isinstance(outcome, Reservation)]
            if marked:  # the collector won: no writer holds a reservation on its blob
                assert set(reservations) <= {Reservation.BUSY}
            else:  # a writer won: the blob stays, and the writers may store over it
                assert Reservation.BUSY not in reservations

    async def test_workers_pushing_a_manifest_while_a_collector_unlinks_its_layer(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        for round_ in range(6):
            layer = digest(f"layer {round_}")
            await link(store, "team/app", layer, 10)
            manifest = image("team/app", f"m {round_}")
            token = await reserve(store, manifest.digest, manifest.size)
            references = [Reference(layer, ReferenceKind.BLOB)]

            def push(manifest: Manifest, references: list[Reference], token: str) -> Call[None]:
                return lambda: store.put_manifest(manifest, references, "latest", token)

            def collector(layer: str) -> Call[dict[str, list[str]]]:
                return lambda: other_store.delete_links({"team/app": [layer]}, future())

            calls: list[Call[Any]] = [push(manifest, references, token), collector(layer)]
            _, errors = in_workers(calls if round_ % 2 else calls[::-1])
            assert all(isinstance(error, Missing) for error in errors), errors
            if errors:  # the collector won: the push stored nothing
                assert await store.get_manifest("team/app", manifest.digest) is None
                assert await store.linked_blob_size("team/app", layer) is None
            else:  # the push won: its layer stays linked
                assert await store.get_manifest("team/app", "latest") == manifest
                assert await store.linked_blob_size("team/app", layer) == 10

    async def test_workers_tagging_a_manifest_while_a_collector_deletes_it(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        for round_ in range(6):
            manifest = image("team/app", f"m {round_}")
            await put(store, manifest, [], None)
            token = await reserve(store, manifest.digest, manifest.size)

            def tag(manifest: Manifest, tag: str, token: str) -> Call[None]:
                return lambda: store.put_manifest(manifest, [], tag, token)

            def collector(digest: str) -> Call[dict[str, list[str]]]:
                return lambda: other_store.delete_manifests({"team/app": [digest]}, future(), True)

            calls: list[Call[Any]] = [
                tag(manifest, f"v{round_}", token),
                collector(manifest.digest),
            ]
            _, errors = in_workers(calls if round_ % 2 else calls[::-1])
            assert errors == []
            # Whoever won, the tag names a manifest, and the manifest's bytes stay linked.
            assert await store.get_manifest("team/app", f"v{round_}") == manifest
            assert await store.linked_blob_size("team/app", manifest.digest) == manifest.size

    # refresh tokens of the token service: one row per login, found by its hash

    async def test_refresh_token_added_then_found(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        token = refresh_token("one")
        await store.add_refresh_token(token)
        assert await store.find_refresh_token(token.token_hash) == token
        # every worker and instance on the database sees it
        found = await other_store.find_refresh_token(token.token_hash)
        assert found == token
        assert found.issued_at.tzinfo is not None
        assert await store.find_refresh_token(refresh_token("absent").token_hash) is None
        forever = refresh_token("forever", lifetime=None)
        await store.add_refresh_token(forever)
        assert await store.find_refresh_token(forever.token_hash) == forever

    async def test_refresh_token_use_is_recorded(self, store: MetadataStore) -> None:
        token = refresh_token("one")
        await store.add_refresh_token(token)
        used = token.issued_at + timedelta(minutes=5)
        assert await store.use_refresh_token(token.token_hash, used) is True
        found = await store.find_refresh_token(token.token_hash)
        assert found is not None
        assert found.last_used_at == used
        assert await store.use_refresh_token(refresh_token("absent").token_hash, used) is False

    async def test_refresh_token_delete_and_revoke_a_user(self, store: MetadataStore) -> None:
        alices = [refresh_token(f"alice-{i}") for i in range(3)]
        bob = refresh_token("bob", "bob")
        for token in [*alices, bob]:
            await store.add_refresh_token(token)
        assert await store.delete_refresh_token(alices[0].token_hash) is True
        assert await store.delete_refresh_token(alices[0].token_hash) is False
        assert await store.find_refresh_token(alices[0].token_hash) is None
        assert await store.revoke_refresh_tokens("alice") == 2
        assert await store.revoke_refresh_tokens("alice") == 0
        assert await store.find_refresh_token(alices[1].token_hash) is None
        assert await store.find_refresh_token(bob.token_hash) == bob

    async def test_adding_a_refresh_token_prunes_the_earliest_expired_first(
        self, store: MetadataStore
    ) -> None:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
        hour = timedelta(hours=1)
        count = REFRESH_PRUNE_BATCH + 2
        names = [f"expired-{i}" for i in range(count)]
        expired = [
            refresh_token(name, issued_at=start + i * hour, lifetime=hour)
            for i, name in enumerate(names)
        ]
        forever = refresh_token("forever", issued_at=start, lifetime=None)
        # newest first, so that no add prunes what the test needs
        for token in [forever, *reversed(expired)]:
            await store.add_refresh_token(token)
        # expired before it: all but the last (which expires at its issue time itself, not
        # before it); a batch of them goes, the earliest first
        cutoff = start + count * hour
        await store.add_refresh_token(refresh_token("one", issued_at=cutoff))
        assert await kept(store, names) == names[REFRESH_PRUNE_BATCH:]
        await store.add_refresh_token(refresh_token("two", issued_at=cutoff))
        assert await kept(store, names) == names[-1:]
        assert await store.find_refresh_token(forever.token_hash) == forever
        assert await kept(store, ["one", "two"]) == ["one", "two"]

    async def test_adding_a_refresh_token_prunes_a_few_expired_ones(
        self, store: MetadataStore
    ) -> None:
        long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=200)
        old = [f"old-{i}" for i in range(REFRESH_PRUNE_BATCH + 4)]
        for name in old:
            await store.add_refresh_token(refresh_token(name, issued_at=long_ago))
        await store.add_refresh_token(refresh_token("new"))
        assert len(await kept(store, old)) == 4
        await store.add_refresh_token(refresh_token("newer"))
        assert await kept(store, old) == []
        assert await kept(store, ["new"]) == ["new"]

    async def test_workers_adding_refresh_tokens_while_pruning(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=200)
        old = [f"old-{i}" for i in range(3 * REFRESH_PRUNE_BATCH)]
        for name in old:
            await store.add_refresh_token(refresh_token(name, issued_at=long_ago))
        stores = [store, other_store] * 4
        fresh = [refresh_token(f"fresh-{i}") for i in range(len(stores))]
        _, errors = in_workers(
            [
                lambda s=s, t=t: s.add_refresh_token(t)  # type: ignore[misc]
                for s, t in zip(stores, fresh, strict=True)
            ]
        )
        assert errors == []
        for token in fresh:
            assert await store.find_refresh_token(token.token_hash) == token
        assert await kept(store, old) == []

    # failed logins: one row per failure, counted in a window, shared by every worker

    async def test_failures_are_counted_in_their_window(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        second = timedelta(seconds=1)
        assert await store.failures_since("address-a", now - 60 * second) == []
        assert await store.record_failure("address-a", now, now - 60 * second) == 1
        assert await other_store.record_failure("address-a", now + second, now) == 2
        assert await store.record_failure("username-b", now + second, now) == 1
        # every worker and instance on the database counts the same failures
        assert await other_store.failures_since("address-a", now) == [now, now + second]
        assert await store.failures_since("address-a", now + second) == [now + second]
        assert await store.record_failure("address-a", now + 90 * second, now + 30 * second) == 1

    async def test_clearing_forgets_one_key(self, store: MetadataStore) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        for key in ("username-a", "username-a", "username-b"):
            await store.record_failure(key, now, now - timedelta(minutes=1))
        await store.clear_failures("username-a")
        await store.clear_failures("username-absent")
        assert await store.failures_since("username-a", now - timedelta(minutes=1)) == []
        assert await store.failures_since("username-b", now - timedelta(minutes=1)) == [now]

    async def test_recording_a_failure_prunes_a_few_old_ones(self, store: MetadataStore) -> None:
        long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        for n in range(LOGIN_FAILURE_PRUNE_BATCH + 4):
            await store.record_failure("old", long_ago + n * timedelta(seconds=1), long_ago)
        assert len(await store.failures_since("old", long_ago)) == LOGIN_FAILURE_PRUNE_BATCH + 4
        now = long_ago + timedelta(days=1)
        await store.record_failure("new", now, now - timedelta(minutes=1))
        assert len(await store.failures_since("old", long_ago)) == 4  # the oldest went first
        await store.record_failure("new", now, now - timedelta(minutes=1))
        assert await store.failures_since("old", long_ago) == []
        assert len(await store.failures_since("new", now)) == 2

    async def test_workers_recording_failures_at_once_count_them_all(
        self, store: MetadataStore, other_store: MetadataStore
    ) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        since = now - timedelta(minutes=1)
        stores = [store, other_store] * 4
        counts, errors = in_workers(
            [lambda s=s: s.record_failure("address-a", now, since) for s in stores]  # type: ignore[misc]
        )
        assert errors == []
        # each counts itself and what committed before it (at once, that may be little)
        assert all(1 <= count <= len(stores) for count in counts)
        assert len(await store.failures_since("address-a", now)) == len(stores)

    # verify, backup and restore: blob records in pages, unreadable references, repairs

    async def test_blobs_are_listed_in_pages_in_every_state(self, store: MetadataStore) -> None:
        for name in ("a", "b", "c"):
            await link(store, "app", digest(name), 10)
        await reserve(store, digest("pending"), 5)
        ordered = sorted([digest("a"), digest("b"), digest("c"), digest("pending")])

        first = await store.list_blobs(None, 3)
        rest = await store.list_blobs(first[-1].digest, 3)

        assert [r.digest for r in first + rest] == ordered
        assert await store.list_blobs(ordered[-1], 3) == []
        states = {r.digest: (r.state, r.size) for r in first + rest}
        assert states[digest("a")] == (BlobState.STORED, 10)
        assert states[digest("pending")] == (BlobState.PENDING, 5)

    async def test_references_a_repository_cannot_read_are_listed(
        self, store: MetadataStore
    ) -> None:
        for name in ("config", "layer"):
            await link(store, "app", digest(name), 10)
        await put(store, image("app", "child"), [blob("config"), blob("layer")], None)
        await put(store, image("app", "index", media_type=INDEX), [child("child")], "v1")
        cached = image("app", "cached")
        token = await reserve(store, cached.digest, cached.size)
        await store.put_cached_manifest(cached, [blob("upstream")], "c", token, datetime.now(UTC))
        assert await store.unreadable_references(100) == []

        await store.unlink_blob("app", digest("layer"))
        found = await store.unreadable_references(100)
        assert [(r.repository, r.manifest, r.digest, r.kind) for r in found] == [
            ("app", digest("child"), digest("layer"), ReferenceKind.BLOB)
        ]  # the cached manifest's upstream blob is no missing one
        await store.delete_manifest("app", digest("child"))
        found = await store.unreadable_references(100)
        assert [(r.manifest, r.digest, r.kind) for r in found] == [
            (digest("index"), digest("child"), ReferenceKind.MANIFEST)
        ]

    async def test_a_condemned_blob_is_unlinked_everywhere_and_its_manifests_deleted(
        self, store: MetadataStore
    ) -> None:
        await link(store, "a", digest("layer"), 10)
        await link(store, "b", digest("layer"), 10)
        manifest = image("a", "image")
        await put(store, manifest, [blob("layer")], "v1")
        await put(store, replace(manifest, repository="b"), [blob("layer")], "v1")
        token = uuid.uuid4().hex

        condemned = await store.condemn_blob(manifest.digest, token)

        assert (condemned.found, condemned.unlinked, condemned.manifests) == (True, (), ("a", "b"))
        assert await store.get_manifest("a", "v1") is None
        assert await store.get_manifest("b", manifest.digest) is None
        # Writers of the digest wait while its bytes are deleted, then find nothing stored.
        assert await store.reserve_blob(manifest.digest, 1, uuid.uuid4().hex) is Reservation.BUSY
        await store.forget_blobs([manifest.digest], token)
        assert await store.reserve_blob(manifest.digest, 1, uuid.uuid4().hex) is Reservation.ABSENT

        condemned = await store.condemn_blob(digest("layer"), token)
        assert (condemned.unlinked, condemned.manifests) == (("a", "b"), ())
        assert await store.linked_blob_size("a", digest("layer")) is None
        assert not (await store.condemn_blob(digest("absent"), token)).found
