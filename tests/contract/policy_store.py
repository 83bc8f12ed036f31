"""The policies' part of the MetadataStore contract (PolicyStore, RobotStore, the immutable
put_manifest and delete_manifest): a mixin of MetadataStoreContract, so every backend runs it.

A library, not a test module.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from portside.metadata.base import (
    AuditEntry,
    AuditQuery,
    Journal,
    Manifest,
    MetadataStore,
    RobotToken,
    TagLocked,
    TagPull,
)


def _digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def _manifest(repository: str, name: str) -> Manifest:
    return Manifest(repository, _digest(name), "application/vnd.oci.image.manifest.v1+json", 100)


async def _reserve(store: MetadataStore, digest: str, size: int) -> str:
    token = hashlib.sha256(f"{digest}{datetime.now(UTC)}".encode()).hexdigest()[:32]
    await store.reserve_blob(digest, size, token)
    return token


async def _link(store: MetadataStore, repository: str, name: str, size: int) -> None:
    digest = _digest(name)
    await store.link_blob(repository, digest, size, await _reserve(store, digest, size))


async def _put(
    store: MetadataStore, repository: str, name: str, tag: str | None, immutable: bool = False
) -> Manifest:
    manifest = _manifest(repository, name)
    token = await _reserve(store, manifest.digest, manifest.size)
    await store.put_manifest(manifest, [], tag, token, immutable=immutable)
    return manifest


def _robot(name: str, secret: str, expires_at: datetime | None = None) -> RobotToken:
    return RobotToken(
        token_hash=hashlib.sha256(secret.encode()).hexdigest(),
        name=name,
        scopes="repository:team/app:pull,push",
        created_at=datetime.now(UTC).replace(microsecond=0),
        expires_at=expires_at,
    )


class PolicyStoreContract:
    # immutable tags

    async def test_an_immutable_tag_is_not_moved(self, store: MetadataStore) -> None:
        first = await _put(store, "team/app", "one", "v1", immutable=True)
        await _put(store, "team/app", "one", "v1", immutable=True)  # the same: no move

        with pytest.raises(TagLocked) as locked:
            await _put(store, "team/app", "two", "v1", immutable=True)

        assert (locked.value.tag, locked.value.digest) == ("v1", first.digest)
        found = await store.get_manifest("team/app", "v1")
        assert found is not None
        assert found.digest == first.digest
        assert await store.get_manifest("team/app", _digest("two")) is None  # nothing stored
        await _put(store, "team/app", "two", "v1")  # not immutable for this caller: moves

    async def test_a_manifest_with_a_protected_tag_is_not_deleted(
        self, store: MetadataStore
    ) -> None:
        pushed = await _put(store, "team/app", "one", "v1")
        await store.put_manifest(
            pushed, [], "latest", await _reserve(store, pushed.digest, pushed.size)
        )

        with pytest.raises(TagLocked):
            await store.delete_manifest("team/app", pushed.digest, protected=lambda t: t == "v1")

        assert await store.get_manifest("team/app", "latest") is not None
        assert await store.delete_manifest(
            "team/app", pushed.digest, protected=lambda t: t.startswith("x")
        )

    # quotas

    async def test_a_namespace_footprint_counts_each_blob_once(self, store: MetadataStore) -> None:
        await _link(store, "team/a", "layer", 1000)
        await _link(store, "team/b", "layer", 1000)  # the same blob: counted once
        await _link(store, "team/b", "other", 10)
        await _link(store, "teamx/c", "big", 99999)  # another namespace
        await _link(store, "top", "top", 7)
        a = await _put(store, "team/a", "image-a", "v1")
        await _put(store, "team/a", "image-a", "v2")
        await _put(store, "team/b", "image-b", None)

        team = await store.namespace_footprint("team")
        top = await store.namespace_footprint("")

        assert team.bytes == 1000 + 10 + a.size + _manifest("team/b", "image-b").size
        assert (team.repositories, team.tags) == (2, 2)
        assert top.bytes == 7
        assert top.repositories == 0
        assert await store.namespace_holds("team", _digest("layer"))
        assert not await store.namespace_holds("team", _digest("big"))
        assert await store.namespace_footprints() == {"team": team}  # "" holds no manifest

    # retention

    async def test_tag_history_and_pull_times(self, store: MetadataStore) -> None:
        await _put(store, "app", "one", "v1")
        await _put(store, "app", "two", "v2")
        at = datetime.now(UTC).replace(microsecond=0)

        await store.record_pulls([TagPull("app", "v1", at), TagPull("app", "gone", at)])
        await store.record_pulls([TagPull("app", "v1", at - timedelta(hours=1))])  # older: kept

        history = {t.name: t for t in await store.tag_history("app")}
        assert set(history) == {"v1", "v2"}
        assert history["v1"].pulled_at == at
        assert history["v2"].pulled_at is None
        assert history["v1"].digest == _digest("one")
        assert history["v1"].pushed_at <= history["v2"].pushed_at

    async def test_expire_tag_only_as_judged(self, store: MetadataStore) -> None:
        await _put(store, "app", "one", "v1")
        await _put(store, "app", "one", "v2")
        judged = {t.name: t for t in await store.tag_history("app")}
        await _put(store, "app", "two", "v2")  # moved since it was judged
        now = datetime.now(UTC)
        await store.record_pulls([TagPull("app", "v1", now)])
        entry = AuditEntry(now, "retention-delete", actor="retention", tag="v1")

        assert not await store.expire_tag("app", judged["v2"], None)
        assert not await store.expire_tag("app", judged["v1"], now - timedelta(minutes=1))
        assert await store.expire_tag("app", judged["v1"], None, Journal(audit=(entry,)))

        assert [t.name for t in await store.tag_history("app")] == ["v2"]
        assert await store.get_manifest("app", _digest("one")) is not None  # the manifest stays
        logged = await store.audit_entries(AuditQuery(action="retention-delete"))
        assert [r.entry.tag for r in logged] == ["v1"]

    # repository delete

    async def test_delete_repository_removes_its_rows_and_keeps_shared_blobs(
        self, store: MetadataStore
    ) -> None:
        await _link(store, "team/a", "shared", 10)
        await _link(store, "team/b", "shared", 10)
        await _put(store, "team/a", "one", "v1")
        await _put(store, "team/a", "two", None)
        await store.create_upload("u1", "team/a")

        removed = await store.delete_repository("team/a")

        assert removed is not None
        assert (removed.manifests, removed.tags) == (2, 1)
        assert not await store.repository_exists("team/a")
        assert await store.get_upload("team/a", "u1") is None
        assert await store.linked_blob_size("team/b", _digest("shared")) == 10
        assert await store.delete_repository("team/a") is None
        await _put(store, "team/a", "one", "v1")  # the name can be used again

    async def test_delete_repository_refuses_a_protected_tag(self, store: MetadataStore) -> None:
        await _put(store, "team/a", "one", "v1.0")

        with pytest.raises(TagLocked):
            await store.delete_repository("team/a", lambda tag: tag.startswith("v"))

        assert await store.get_manifest("team/a", "v1.0") is not None

    # robot tokens

    async def test_robot_tokens(self, store: MetadataStore) -> None:
        robot = _robot("ci", "secret-1")
        assert await store.add_robot(robot)
        assert not await store.add_robot(_robot("ci", "secret-2"))  # the name is taken
        at = datetime.now(UTC).replace(microsecond=0)

        await store.use_robot(robot.token_hash, at)

        found = await store.find_robot(robot.token_hash)
        assert found is not None
        assert found.last_used_at == at
        assert found.name == "ci"
        assert await store.robot_named("ci") == found
        assert [t.name for t in await store.list_robots()] == ["ci"]
        assert await store.delete_robot("ci")
        assert not await store.delete_robot("ci")
        assert await store.find_robot(robot.token_hash) is None
