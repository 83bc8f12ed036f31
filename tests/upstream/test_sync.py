"""`portside sync` (registry/sync.py) from a real distribution behind htpasswd, and from another
Portside, into a registry in-process: the chosen repositories and tags arrive whole with their
referrers, a second run fetches nothing, and a dry run counts what a run fetches and stores
nothing."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from e2e.server import PortsideServer
from portside.cli import main
from portside.config.settings import Settings
from portside.metadata.migrate import current, downgrade, history, upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.registry.sync import Sync
from portside.registry.tag_filter import TagFilter
from portside.server.app import create_app
from portside.storage.filesystem import FilesystemBlobStore

from .conftest import PULLER, UpstreamFactory, pusher_client
from .registries import (
    OCI_MANIFEST,
    Distribution,
    PushedImage,
    digest_of,
    push_artifact,
    push_image,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.example.signature"


@dataclass
class Local:
    client: httpx.AsyncClient
    storage: FilesystemBlobStore
    metadata: SqlMetadataStore


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    """A registry in-process, and its stores as `portside sync` opens them beside it."""
    storage = tmp_path / "portside"
    storage.mkdir()
    upgrade(f"sqlite:///{storage / 'registry.db'}")
    app = create_app(Settings(storage_path=storage, workers=1))
    metadata = SqlMetadataStore(f"sqlite:///{storage / 'registry.db'}")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portside.test") as client:
        yield Local(client, FilesystemBlobStore(storage), metadata)
    await metadata.close()
    await app.state.registry.metadata.close()


def fetched(distribution: Distribution, kind: str) -> int:
    """GETs of manifests or blobs in the upstream's access log that answered them (HEADs and
    404s, such as a lookup of a referrers tag nobody pushed, aside)."""
    found = re.findall(rf'"GET /v2/\S+/{kind}/\S+ HTTP/[\d.]+" 20[06] ', distribution.log_text())
    return len(found)


def tag_referrers(
    client: httpx.Client, repository: str, subject: str, artifacts: list[bytes]
) -> None:
    """What oras and cosign do where a registry has no referrers API: the subject's referrers
    listed in an index under the tag sha256-<hex> (the referrers tag schema)."""
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest_of(artifact),
            "size": len(artifact),
            "artifactType": json.loads(artifact)["artifactType"],
        }
        for artifact in artifacts
    ]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    answer = client.put(
        f"/v2/{repository}/manifests/{subject.replace(':', '-')}",
        content=index.encode(),
        headers={"Content-Type": OCI_INDEX},
    )
    assert answer.status_code == 201, answer.text


async def referrers_here(client: httpx.AsyncClient, name: str, digest: str) -> list[str]:
    """What the registry's own referrers API lists for digest."""
    response = await client.get(f"/v2/{name}/referrers/{digest}")
    assert response.status_code == 200, response.text
    return sorted(entry["digest"] for entry in response.json()["manifests"])


async def assert_pulls(client: httpx.AsyncClient, name: str, image: PushedImage) -> None:
    response = await client.get(f"/v2/{name}/manifests/{image.tag}")
    assert response.status_code == 200, response.text
    assert (response.content, response.headers["docker-content-digest"]) == (
        image.manifest,
        image.digest,
    )
    for content in (image.config, *image.layers):
        blob = await client.get(f"/v2/{name}/blobs/{digest_of(content)}")
        assert (blob.status_code, blob.content) == (200, content)


async def test_sync_copies_matching_tags_and_a_second_run_fetches_nothing(
    distribution_htpasswd: Distribution, make_upstream: UpstreamFactory, local: Local
) -> None:
    upstream_url = distribution_htpasswd.url
    team = f"sync-{secrets.token_hex(4)}"
    base = secrets.token_bytes(4096)
    with httpx.Client(base_url=upstream_url, auth=distribution_htpasswd.auth) as client:
        images = {
            (repository, tag): push_image(
                client, f"{team}/{repository}", tag, (base, secrets.token_bytes(512))
            )
            for repository in ("api", "web")
            for tag in ("1.2.0", "1.3.1", "2.0.0", "latest")
        }
        push_image(client, f"other-{team}/api", "1.2.0")
    username, password = distribution_htpasswd.auth or ("", "")
    upstream = make_upstream(upstream_url, username=username, password=password)
    run = Sync(upstream, local.storage, local.metadata, prefix="mirror/")
    names = await run.repositories([f"{team}/*"])
    assert names == [f"{team}/api", f"{team}/web"]

    report = await run.sync(names, TagFilter.parse((), ">=1.2,<2"))

    assert report.failures == []
    assert (report.repositories, report.tags, report.unchanged) == (2, 4, 0)
    assert report.blobs == 4 * 2 + 1  # each image's config and own layer; the base layer once
    for (repository, tag), image in images.items():
        name = f"mirror/{team}/{repository}"
        if tag in ("1.2.0", "1.3.1"):
            await assert_pulls(local.client, name, image)
        else:
            missing = await local.client.get(f"/v2/{name}/manifests/{tag}")
            assert missing.status_code == 404
    manifests, blobs = (
        fetched(distribution_htpasswd, "manifests"),
        fetched(distribution_htpasswd, "blobs"),
    )

    again = await run.sync(names, TagFilter.parse((), ">=1.2,<2"))

    assert (again.tags, again.unchanged, again.manifests, again.blobs) == (4, 4, 0, 0)
    assert fetched(distribution_htpasswd, "manifests") == manifests
    assert fetched(distribution_htpasswd, "blobs") == blobs


async def test_a_moved_tag_fetches_only_what_is_new(
    distribution_htpasswd: Distribution, make_upstream: UpstreamFactory, local: Local
) -> None:
    name = f"sync-{secrets.token_hex(4)}/app"
    base = secrets.token_bytes(2048)
    with httpx.Client(
        base_url=distribution_htpasswd.url, auth=distribution_htpasswd.auth
    ) as client:
        push_image(client, name, "stable", (base,))
        username, password = distribution_htpasswd.auth or ("", "")
        run = Sync(
            make_upstream(distribution_htpasswd.url, username=username, password=password),
            local.storage,
            local.metadata,
        )
        await run.sync([name], TagFilter.parse(("stable",), None))
        moved = push_image(client, name, "stable", (base, secrets.token_bytes(100)))

    report = await run.sync([name], TagFilter.parse(("stable",), None))

    assert (report.manifests, report.blobs) == (1, 2)  # the new config and layer, not the base
    await assert_pulls(local.client, name, moved)


async def test_referrers_come_along_from_the_referrers_tag_schema(
    distribution_htpasswd: Distribution, make_upstream: UpstreamFactory, local: Local
) -> None:
    """distribution 2.8 has no referrers API: the referrers are found under sha256-<hex> tags,
    which the tag filter leaves out, and listed by this registry's own API; a referrer attached
    later comes at the next run, alone."""
    name = f"sync-{secrets.token_hex(4)}/signed"
    with httpx.Client(
        base_url=distribution_htpasswd.url, auth=distribution_htpasswd.auth
    ) as client:
        image = push_image(client, name, "1.0.0")
        sbom = push_artifact(client, name, image.manifest, SBOM)
        signature = push_artifact(client, name, sbom, SIGNATURE)  # of the SBOM
        tag_referrers(client, name, image.digest, [sbom])
        tag_referrers(client, name, digest_of(sbom), [signature])
        username, password = distribution_htpasswd.auth or ("", "")
        run = Sync(
            make_upstream(distribution_htpasswd.url, username=username, password=password),
            local.storage,
            local.metadata,
        )

        report = await run.sync([name], TagFilter.parse(("1.*",), None))

        assert report.failures == []
        assert (report.tags, report.manifests, report.referrers) == (1, 3, 2)
        assert await referrers_here(local.client, name, image.digest) == [digest_of(sbom)]
        assert await referrers_here(local.client, name, digest_of(sbom)) == [digest_of(signature)]
        copied = await local.client.get(f"/v2/{name}/manifests/{digest_of(signature)}")
        assert copied.content == signature
        listed = await local.client.get(f"/v2/{name}/tags/list")
        assert listed.json()["tags"] == ["1.0.0"]
        # once: after the 404, the run asks the tag schema only
        assert distribution_htpasswd.log_text().count(f"GET /v2/{name}/referrers/") == 1

        later = push_artifact(client, name, image.manifest, SIGNATURE)
        tag_referrers(client, name, image.digest, [sbom, later])

    again = await run.sync([name], TagFilter.parse(("1.*",), None))

    assert (again.unchanged, again.manifests, again.referrers, again.blobs) == (1, 1, 1, 1)
    assert await referrers_here(local.client, name, image.digest) == sorted(
        [digest_of(sbom), digest_of(later)]
    )


async def test_referrers_come_along_from_the_referrers_api(
    portside_token: PortsideServer, make_upstream: UpstreamFactory, local: Local
) -> None:
    """Another Portside answers the referrers API, behind its token service."""
    repository = f"sync-{secrets.token_hex(4)}/app"
    with pusher_client(portside_token, repository) as client:
        image = push_image(client, repository, "v1")
        sbom = push_artifact(client, repository, image.manifest, SBOM)
    upstream = make_upstream(portside_token.url, username=PULLER[0], password=PULLER[1])

    report = await Sync(upstream, local.storage, local.metadata).sync(
        [repository], TagFilter.parse((), None)
    )

    assert report.failures == []
    assert (report.manifests, report.referrers) == (2, 1)
    assert await referrers_here(local.client, repository, image.digest) == [digest_of(sbom)]


async def test_a_dry_run_counts_what_a_run_fetches_and_stores_nothing(
    distribution_htpasswd: Distribution, make_upstream: UpstreamFactory, local: Local
) -> None:
    name = f"sync-{secrets.token_hex(4)}/app"
    base = secrets.token_bytes(3000)
    with httpx.Client(
        base_url=distribution_htpasswd.url, auth=distribution_htpasswd.auth
    ) as client:
        first = push_image(client, name, "1.0.0", (base, secrets.token_bytes(100)))
        push_image(client, name, "1.1.0", (base,))
        sbom = push_artifact(client, name, first.manifest, SBOM)
        tag_referrers(client, name, first.digest, [sbom])
    username, password = distribution_htpasswd.auth or ("", "")

    def sync(dry_run: bool) -> Sync:
        upstream = make_upstream(distribution_htpasswd.url, username=username, password=password)
        return Sync(upstream, local.storage, local.metadata, dry_run=dry_run)

    dry = await sync(dry_run=True).sync([name], TagFilter.parse((), ">=1"))

    assert dry.failures == []
    assert await local.metadata.get_manifest(name, "1.0.0") is None
    assert await local.metadata.blob_size(digest_of(base)) is None
    assert not (local.storage.root / "blobs").exists() or not any(
        (local.storage.root / "blobs").rglob("*")
    )
    real = await sync(dry_run=False).sync([name], TagFilter.parse((), ">=1"))
    assert real.failures == []
    assert (dry.manifests, dry.referrers, dry.blobs, dry.bytes) == (
        real.manifests,
        real.referrers,
        real.blobs,
        real.bytes,
    )
    # the images' 2 configs and 2 layers (one shared), the SBOM's config and layer
    assert (dry.manifests, dry.referrers, dry.blobs) == (3, 1, 6)
    assert sorted(dry.tagged) == sorted(real.tagged)
    assert sorted(dry.copied) == sorted(real.copied)


def test_the_dry_run_command_lists_what_it_would_copy_and_makes_nothing(
    distribution_htpasswd: Distribution, tmp_path: Path
) -> None:
    name = f"sync-{secrets.token_hex(4)}/app"
    with httpx.Client(
        base_url=distribution_htpasswd.url, auth=distribution_htpasswd.auth
    ) as client:
        image = push_image(client, name, "2.0.0")
    storage = tmp_path / "registry"
    config = tmp_path / "config.yml"
    config.write_text(f"dev:\n  storage_path: {storage}\n")
    username, password = distribution_htpasswd.auth or ("", "")
    args = ["sync", "--config", str(config), "--username", username]

    result = CliRunner().invoke(
        main,
        [*args, "--dry-run", distribution_htpasswd.url, name],
        env={"PORTSIDE_SYNC_PASSWORD": password},
    )
    refused = CliRunner().invoke(main, [*args, "--dry-run", "--every", "1h", "http://x", name])

    assert result.exit_code == 0, result.output
    assert f"tag {name}:2.0.0 {image.digest}\n" in result.output
    assert f"manifest {name}@{image.digest}\n" in result.output
    assert "would fetch 1 manifests (0 of them referrers) and 2 blobs" in result.output
    assert not storage.exists()
    assert refused.exit_code == 2
    assert "a dry run runs once" in refused.output


def test_the_dry_run_command_reads_a_registry_as_it_is(
    distribution_htpasswd: Distribution, tmp_path: Path
) -> None:
    """It lists only what the registry lacks, and migrates nothing: a database at an older
    revision is refused."""
    name = f"sync-{secrets.token_hex(4)}/app"
    with httpx.Client(
        base_url=distribution_htpasswd.url, auth=distribution_htpasswd.auth
    ) as client:
        push_image(client, name, "1.0.0")
        newer = push_image(client, name, "1.1.0")
    config = tmp_path / "config.yml"
    config.write_text(f"dev:\n  storage_path: {tmp_path / 'registry'}\n")
    username, password = distribution_htpasswd.auth or ("", "")
    env = {"PORTSIDE_SYNC_PASSWORD": password}
    args = ["sync", "--config", str(config), "--username", username]
    first = CliRunner().invoke(
        main, [*args, "--tags", "1.0.0", distribution_htpasswd.url, name], env=env
    )
    assert first.exit_code == 0, first.output
    database = f"sqlite:///{tmp_path / 'registry' / 'registry.db'}"

    dry = CliRunner().invoke(main, [*args, "--dry-run", distribution_htpasswd.url, name], env=env)
    downgrade(database, history()[-2].revision)
    older = CliRunner().invoke(main, [*args, "--dry-run", distribution_htpasswd.url, name], env=env)

    assert dry.exit_code == 0, dry.output
    assert [line for line in dry.output.splitlines() if line.startswith(("tag", "manifest"))] == [
        f"tag {name}:1.1.0 {newer.digest}",
        f"manifest {name}@{newer.digest}",
    ]
    assert "2 tags (1 unchanged)" in dry.output
    assert older.exit_code == 1
    assert f"the metadata database is at revision {history()[-2].revision}" in older.output
    assert current(database) == history()[-2].revision
