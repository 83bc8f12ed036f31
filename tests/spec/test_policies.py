"""Policies in-process: immutable tags refuse a move or a delete naming their rule; quotas refuse
a push as early as its size is known, with the usage and the limit, and let it through once a
delete and a collection freed room; a repository's deletion; retention in the collector."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from helpers import (
    Pushed,
    assert_error,
    digest_of,
    push_blob,
    push_image,
    put_manifest,
    random_bytes,
    start_upload,
)
from starlette.applications import Starlette

from portside.config.settings import Settings
from portside.metadata.base import AuditQuery, MetadataStore
from portside.registry import keys
from portside.registry.gc import Collector, Policy
from portside.registry.names import Digest
from portside.server.app import create_app
from portside.server.audit_log import operator
from portside.server.housekeeping import delete_repository
from portside.server.policies import build_retention
from portside.storage.base import NotFound

IMMUTABLE = {"name": "releases", "repositories": ["team/*"], "tags": ["v*"]}
SEMVER = {"repositories": ["*"], "tag_regex": r"\d+\.\d+\.\d+"}


@dataclass
class Site:
    app: Starlette
    client: httpx.AsyncClient
    settings: Settings

    @property
    def metadata(self) -> MetadataStore:
        found: MetadataStore = self.app.state.registry.metadata
        return found

    async def collect(self) -> None:
        retention = build_retention(self.settings, self.metadata)
        storage = self.app.state.registry.blobs._storage
        policy = Policy(grace_period=timedelta(0), audited=self.settings.audit is not None)
        await Collector(storage, self.metadata, policy, retention=retention).collect()


@pytest.fixture
async def make_site(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Site:
            settings = make_settings(**overrides)
            app = create_app(settings)
            stack.push_async_callback(app.state.registry.metadata.close)
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://registry.test")
            return Site(app, await stack.enter_async_context(client), settings)

        yield make


def message(response: httpx.Response) -> str:
    text: str = response.json()["errors"][0]["message"]
    return text


# Immutable tags ---------------------------------------------------------------------------------


async def test_an_immutable_tag_cannot_be_moved(make_site: Callable[..., Any]) -> None:
    site = await make_site(policies={"immutable_tags": [IMMUTABLE]})
    first = await push_image(site.client, "team/app", "v1.0")
    await push_image(site.client, "team/app", "latest")  # not immutable: moves freely
    await push_image(site.client, "team/app", "latest")

    other = await push_image(site.client, "team/app", None)
    response = await put_manifest(site.client, "team/app", "v1.0", other.body, other.media_type)

    assert_error(response, 403, "DENIED")
    assert "tag v1.0 of team/app is immutable (rule releases)" in message(response)
    pulled = await site.client.get("/v2/team/app/manifests/v1.0")
    assert pulled.headers["docker-content-digest"] == first.digest
    again = await put_manifest(site.client, "team/app", "v1.0", first.body, first.media_type)
    assert again.status_code == 201  # the same manifest again moves nothing


async def test_an_immutable_tag_cannot_be_deleted_by_tag_nor_by_digest(
    make_site: Callable[..., Any],
) -> None:
    site = await make_site(policies={"immutable_tags": [IMMUTABLE, SEMVER]})
    pushed = await push_image(site.client, "team/app", "v2")
    semver = await push_image(site.client, "other", "1.2.3")

    by_tag = await site.client.delete("/v2/team/app/manifests/v2")
    by_digest = await site.client.delete(f"/v2/team/app/manifests/{pushed.digest}")
    semver_by_digest = await site.client.delete(f"/v2/other/manifests/{semver.digest}")

    assert_error(by_tag, 403, "DENIED")
    assert_error(by_digest, 403, "DENIED")
    assert "rule policies.immutable_tags[1]" in message(semver_by_digest)
    assert (await site.client.get("/v2/team/app/manifests/v2")).status_code == 200


async def test_tags_outside_the_rules_move_and_go(make_site: Callable[..., Any]) -> None:
    site = await make_site(policies={"immutable_tags": [IMMUTABLE]})
    await push_image(site.client, "elsewhere/app", "v1.0")
    await push_image(site.client, "elsewhere/app", "v1.0")

    assert (await site.client.delete("/v2/elsewhere/app/manifests/v1.0")).status_code == 202


# Quotas -----------------------------------------------------------------------------------------


async def test_a_push_beyond_the_byte_quota_is_refused_at_the_first_blob(
    make_site: Callable[..., Any],
) -> None:
    quota = {"name": "team", "namespaces": ["team"], "max_bytes": 2000}
    site = await make_site(policies={"quotas": [quota]})
    await push_image(site.client, "team/app", "one")  # about 700 bytes with its manifest

    data = random_bytes(1500)
    response = await site.client.post(
        "/v2/team/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data
    )

    assert_error(response, 403, "DENIED")
    text = message(response)
    assert "quota exceeded for namespace team (rule team)" in text
    assert "of 2,000 bytes used, this push needs 1,500 more" in text
    assert response.json()["errors"][0]["detail"]["max"] == 2000
    assert await push_blob(site.client, "other/app", data)  # another namespace has no quota


async def test_a_chunk_beyond_the_quota_is_refused_before_its_bytes(
    make_site: Callable[..., Any],
) -> None:
    site = await make_site(policies={"quotas": [{"namespaces": ["*"], "max_bytes": 1000}]})
    location = await start_upload(site.client, "team/app")
    first = await site.client.patch(
        location, content=b"a" * 600, headers={"Content-Range": "0-599"}
    )
    assert first.status_code == 202

    second = await site.client.patch(
        first.headers["location"], content=b"b" * 600, headers={"Content-Range": "600-1199"}
    )

    assert_error(second, 403, "DENIED")
    assert "1,200 more" in message(second)
    status = await site.client.get(first.headers["location"])
    assert status.headers["range"] == "0-599"  # the refused chunk left nothing


async def test_the_manifest_put_counts_tags_and_repositories(
    make_site: Callable[..., Any],
) -> None:
    quota = {"namespaces": ["team"], "max_tags": 2, "max_repositories": 1}
    site = await make_site(policies={"quotas": [quota]})
    pushed = await push_image(site.client, "team/app", "a")
    await push_image(site.client, "team/app", "b")

    third_tag = await put_manifest(site.client, "team/app", "c", pushed.body, pushed.media_type)
    same_tag = await put_manifest(site.client, "team/app", "a", pushed.body, pushed.media_type)
    for digest in pushed.blobs:  # blobs are no limit here: the repository is
        params = {"mount": digest, "from": "team/app"}
        mounted = await site.client.post("/v2/team/second/blobs/uploads/", params=params)
        assert mounted.status_code == 201
    second_repository = await put_manifest(
        site.client, "team/second", "x", pushed.body, pushed.media_type
    )

    assert_error(third_tag, 403, "DENIED")
    assert "2 of 2 tags used" in message(third_tag)
    assert same_tag.status_code == 201
    assert_error(second_repository, 403, "DENIED")
    assert "repositories used" in message(second_repository)


async def test_a_namespace_at_its_quota_takes_a_push_after_a_delete_and_a_collection(
    make_site: Callable[..., Any],
) -> None:
    site = await make_site(policies={"quotas": [{"namespaces": ["team"], "max_bytes": 1500}]})
    old = await push_image(site.client, "team/app", "old", layers=3)
    with pytest.raises(AssertionError, match="quota exceeded"):
        await push_image(site.client, "team/app", "new", layers=3)

    assert (await site.client.delete(f"/v2/team/app/manifests/{old.digest}")).status_code == 202
    await site.collect()

    await push_image(site.client, "team/app", "new", layers=3)


# Repository delete ------------------------------------------------------------------------------


async def test_a_deleted_repository_is_gone_and_its_shared_blobs_stay(
    make_site: Callable[..., Any],
) -> None:
    site = await make_site(audit={"retention": "1d"})
    doomed = await push_image(site.client, "team/doomed", "v1")
    for digest in doomed.blobs:  # the same image in another repository: its blobs shared
        params = {"mount": digest, "from": "team/doomed"}
        assert (await site.client.post("/v2/team/kept/blobs/uploads/", params=params)).is_success
    kept = await put_manifest(site.client, "team/kept", "v1", doomed.body, doomed.media_type)
    assert kept.status_code == 201
    only_doomed = await push_image(site.client, "team/doomed", "v2")

    response = await site.client.delete("/v2/_portside/repositories/team/doomed")

    assert response.status_code == 202
    assert response.json() == {"repository": "team/doomed", "manifests": 2, "tags": 2}
    assert_error(await site.client.get("/v2/team/doomed/tags/list"), 404, "NAME_UNKNOWN")
    assert (await site.client.get("/v2/_catalog")).json()["repositories"] == ["team/kept"]
    again = await site.client.delete("/v2/_portside/repositories/team/doomed")
    assert_error(again, 404, "NAME_UNKNOWN")
    await site.collect()
    for digest in doomed.blobs:
        assert (await site.client.get(f"/v2/team/kept/blobs/{digest}")).status_code == 200
    assert (await site.client.get("/v2/team/kept/manifests/v1")).status_code == 200
    storage = site.app.state.registry.blobs._storage
    for digest in only_doomed.blobs:
        with pytest.raises(NotFound):
            await storage.stat(keys.blob(Digest.parse(digest)))
    entries = await site.metadata.audit_entries(AuditQuery(repository="team/doomed"))
    assert [e.entry.action for e in entries][-1] == "delete"


async def test_a_repository_with_an_immutable_tag_is_not_deleted(
    make_site: Callable[..., Any],
) -> None:
    site = await make_site(policies={"immutable_tags": [IMMUTABLE]})
    await push_image(site.client, "team/app", "v1")

    response = await site.client.delete("/v2/_portside/repositories/team/app")

    assert_error(response, 403, "DENIED")
    assert (await site.client.get("/v2/team/app/manifests/v1")).status_code == 200


async def test_repository_delete_follows_delete_enabled(make_site: Callable[..., Any]) -> None:
    site = await make_site(delete_enabled=False)
    await push_image(site.client, "team/app", "v1")

    response = await site.client.delete("/v2/_portside/repositories/team/app")

    assert_error(response, 405, "UNSUPPORTED")


# Retention --------------------------------------------------------------------------------------


async def push_tags(site: Site, name: str, count: int) -> list[Pushed]:
    return [await push_image(site.client, name, f"build-{i}", layers=1) for i in range(count)]


async def test_keep_last_3_of_10_leaves_the_3_newest_that_still_pull(
    make_site: Callable[..., Any],
) -> None:
    rule = {"name": "ci", "repositories": ["ci/*"], "keep_last": 3}
    site = await make_site(policies={"retention": [rule]}, audit={"retention": "1d"})
    pushed = await push_tags(site, "ci/app", 10)
    other = await push_tags(site, "kept/app", 4)

    await site.collect()

    tags = (await site.client.get("/v2/ci/app/tags/list")).json()["tags"]
    assert sorted(tags) == ["build-7", "build-8", "build-9"]
    for image in pushed[7:]:
        response = await site.client.get(f"/v2/ci/app/manifests/{image.digest}")
        assert response.status_code == 200
        for digest in image.blobs:
            assert (await site.client.get(f"/v2/ci/app/blobs/{digest}")).status_code == 200
    gone = await site.client.get(f"/v2/ci/app/manifests/{pushed[0].digest}")
    assert_error(gone, 404, "MANIFEST_UNKNOWN")
    assert len((await site.client.get("/v2/kept/app/tags/list")).json()["tags"]) == len(other)
    entries = await site.metadata.audit_entries(AuditQuery(action="retention-delete"))
    removed = {e.entry.tag for e in entries if e.entry.tag is not None}
    assert removed == {f"build-{i}" for i in range(7)}
    assert json.loads(entries[0].entry.detail or "{}")["rule"] == "ci"


async def test_retention_and_a_repository_deleted_by_the_cli_tell_the_endpoints(
    make_site: Callable[..., Any],
) -> None:
    rule = {"name": "ci", "repositories": ["ci/*"], "keep_last": 1}
    hook = {"name": "hook", "url": "http://127.0.0.1:9/hook", "ignore": {"actions": ["push"]}}
    site = await make_site(policies={"retention": [rule]}, notifications={"endpoints": [hook]})
    pushed = await push_tags(site, "ci/app", 3)
    await push_tags(site, "team/app", 1)

    await site.collect()
    await delete_repository(site.settings, "team/app")

    sent = [json.loads(e.payload) for e in await site.metadata.pending_events("hook", 100)]
    told = [(e["action"], e["target"], e["actor"]) for e in sent]
    removed = [{"repository": "ci/app", "tag": tag} for tag in ("build-1", "build-0")]
    # Then the manifests the tags left untagged, by digest, as the API's delete tells them.
    untagged = sorted(image.digest for image in pushed[:2])
    assert told == [
        *(("delete", target, {"name": "retention"}) for target in removed),
        *(
            ("delete", {"digest": digest, "repository": "ci/app"}, {"name": "retention"})
            for digest in untagged
        ),
        ("delete", {"repository": "team/app"}, {"name": operator()}),
    ]


async def test_retention_keeps_immutable_matching_and_recently_pulled_tags(
    make_site: Callable[..., Any],
) -> None:
    rule = {
        "repositories": ["*"],
        "keep_last": 1,
        "keep_tags": ["build-1"],
        "keep_pulled_within": "1d",
    }
    immutable = {"repositories": ["*"], "tags": ["build-0"]}
    site = await make_site(policies={"retention": [rule], "immutable_tags": [immutable]})
    await push_tags(site, "app", 5)
    assert (await site.client.head("/v2/app/manifests/build-2")).status_code == 200
    await site.app.state.registry.manifests.policies.pull_times.flush()

    await site.collect()

    tags = (await site.client.get("/v2/app/tags/list")).json()["tags"]
    assert sorted(tags) == ["build-0", "build-1", "build-2", "build-4"]


async def test_remove_older_than_spares_what_is_recent(make_site: Callable[..., Any]) -> None:
    rule = {"repositories": ["*"], "remove_older_than": "1h"}
    site = await make_site(policies={"retention": [rule]})
    await push_tags(site, "app", 2)
    retention = build_retention(site.settings, site.metadata)
    assert retention is not None

    assert await retention.plan(datetime.now(UTC)) == []
    later = await retention.plan(datetime.now(UTC) + timedelta(hours=2))
    assert sorted(r.tag.name for r in later) == ["build-0", "build-1"]
    assert "over 1.0h" in later[0].reason


async def test_a_mount_beyond_the_quota_is_refused_and_one_the_namespace_holds_is_not(
    make_site: Callable[..., Any],
) -> None:
    site = await make_site(policies={"quotas": [{"namespaces": ["team"], "max_bytes": 1000}]})
    big = await push_blob(site.client, "other/app", random_bytes(1500))
    small = await push_blob(site.client, "team/app", random_bytes(600))

    refused = await site.client.post(
        "/v2/team/app/blobs/uploads/", params={"mount": big, "from": "other/app"}
    )
    held = await site.client.post(
        "/v2/team/second/blobs/uploads/", params={"mount": small, "from": "team/app"}
    )

    assert_error(refused, 403, "DENIED")
    assert "600 of 1,000 bytes used, this push needs 1,500 more" in message(refused)
    assert held.status_code == 201  # counted once per namespace: it adds nothing
