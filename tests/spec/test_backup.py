"""`portside backup` and `restore` (registry/backup.py) on a registry in-process: a backup taken
while pushes go on restores into a fresh folder where every image it holds pulls intact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from gc_helpers import GcRegistry, assert_pulls_intact, gc_registry, push_layers, running
from helpers import Pushed, assert_error, digest_of, push_image, push_index, random_bytes

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.registry import keys
from portside.registry.backup import DATABASE, DESCRIPTION, BackupInvalid, backup, restore
from portside.registry.names import Digest
from portside.registry.verify import Fault, Verifier
from portside.server.ownership import sqlite_file
from portside.storage.filesystem import FilesystemBlobStore

__all__ = ["gc_registry"]  # the fixture, imported

pytestmark = pytest.mark.filesystem_only("backs up the SQLite file and the storage folder")


async def back_up(registry: GcRegistry, destination: Path) -> object:
    return await backup(registry.storage, database(registry), destination)


def database(registry: GcRegistry) -> Path:
    found = sqlite_file(registry.settings.metadata_url)
    assert found is not None
    return found


async def restored(registry: GcRegistry, source: Path, root: Path) -> object:
    summary = await restore(source, FilesystemBlobStore(root), root / "registry.db")
    upgrade(f"sqlite:///{root / 'registry.db'}")
    return summary


def fresh_settings(make_settings: Any, root: Path) -> Settings:
    """Settings of the restored registry: its database in its storage folder."""
    settings: Settings = make_settings(
        storage_path=root, database_url=f"sqlite:///{root / 'registry.db'}"
    )
    return settings


async def every_tag_pulls(client: httpx.AsyncClient) -> int:
    """Pull every tag of every repository, and each blob its manifest (or its children's)
    references; how many tags."""
    pulled = 0
    for name in (await client.get("/v2/_catalog")).json()["repositories"]:
        for tag in (await client.get(f"/v2/{name}/tags/list")).json()["tags"]:
            await pull(client, name, tag)
            pulled += 1
    return pulled


async def pull(client: httpx.AsyncClient, name: str, reference: str) -> None:
    response = await client.get(f"/v2/{name}/manifests/{reference}")
    assert response.status_code == 200, (name, reference, response.text)
    assert digest_of(response.content) == response.headers["docker-content-digest"]
    document = json.loads(response.content)
    for child in document.get("manifests", []):
        await pull(client, name, child["digest"])
    for blob in [document["config"], *document["layers"]] if "config" in document else []:
        got = await client.get(f"/v2/{name}/blobs/{blob['digest']}")
        assert got.status_code == 200, (name, blob, got.text)
        assert digest_of(got.content) == blob["digest"]


async def test_a_backup_taken_while_pushes_go_on_restores_and_every_image_pulls(
    gc_registry: GcRegistry, make_settings: Any, tmp_path: Path
) -> None:
    client = gc_registry.client
    base = random_bytes(4096)
    before = [
        await push_layers(client, f"app{n}", "v1", [base, random_bytes(999)]) for n in range(3)
    ]
    index = await push_index(client, "multi", [await push_image(client, "multi", None)])
    pushing = asyncio.gather(
        *(push_layers(client, f"late{n}", "v1", [base, random_bytes(5000)]) for n in range(6))
    )

    summary, late = await asyncio.gather(back_up(gc_registry, tmp_path / "backup"), pushing)

    root = tmp_path / "restored"
    await restored(gc_registry, tmp_path / "backup", root)
    async with running(fresh_settings(make_settings, root)) as fresh:
        for n, pushed in enumerate(before):
            await assert_pulls_intact(fresh.client, f"app{n}", "v1", pushed)
        await pull(fresh.client, "multi", index.digest)
        assert await every_tag_pulls(fresh.client) >= 4  # and those late pushes it caught
        assert (await Verifier(fresh.storage, fresh.metadata).verify()).findings == []
    assert summary.lost == []  # type: ignore[attr-defined]
    assert len(late) == 6


async def test_a_second_backup_copies_only_new_blobs_and_drops_collected_ones(
    gc_registry: GcRegistry, tmp_path: Path
) -> None:
    client = gc_registry.client
    kept = await push_image(client, "app", "v1")
    gone = await push_image(client, "app", "v2")
    first = await back_up(gc_registry, tmp_path / "backup")
    assert first.copied == 1 + len(kept.blobs) + 1 + len(gone.blobs)  # type: ignore[attr-defined]

    assert (await client.delete(f"/v2/app/manifests/{gone.digest}")).status_code == 202
    await gc_registry.collect()
    new = await push_image(client, "app", "v3")
    second = await back_up(gc_registry, tmp_path / "backup")

    assert second.copied == 1 + len(new.blobs)  # type: ignore[attr-defined]
    assert second.pruned == 1 + len(gone.blobs)  # type: ignore[attr-defined]
    backed_up = FilesystemBlobStore(tmp_path / "backup")
    assert {k async for k in backed_up.list(keys.BLOBS)} == {
        keys.blob(Digest.parse(d)) for d in [kept.digest, *kept.blobs, new.digest, *new.blobs]
    }
    description = json.loads((tmp_path / "backup" / DESCRIPTION).read_text())
    assert description["blobs"] == 2 + len(kept.blobs) + len(new.blobs)


async def test_a_corrupt_blob_in_the_backup_is_left_out_with_a_clean_404(
    gc_registry: GcRegistry, make_settings: Any, tmp_path: Path
) -> None:
    pushed: Pushed = await push_image(gc_registry.client, "app", "v1")
    await back_up(gc_registry, tmp_path / "backup")
    layer = next(iter(pushed.blobs))
    path = tmp_path / "backup" / keys.blob(Digest.parse(layer))
    path.write_bytes(b"x" + path.read_bytes()[1:])

    root = tmp_path / "restored"
    summary = await restored(gc_registry, tmp_path / "backup", root)

    assert [(f.fault, f.digest) for f in summary.lost] == [(Fault.CORRUPT, layer)]  # type: ignore[attr-defined]
    async with running(fresh_settings(make_settings, root)) as fresh:
        assert_error(await fresh.client.get(f"/v2/app/blobs/{layer}"), 404, "BLOB_UNKNOWN")
        assert (await fresh.client.get("/v2/app/manifests/v1")).status_code == 200


async def test_bad_folders_are_refused(gc_registry: GcRegistry, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(BackupInvalid, match="neither empty nor a backup"):
        await back_up(gc_registry, tmp_path / "busy")
    with pytest.raises(BackupInvalid, match="no backup at"):
        await restore(tmp_path / "busy", gc_registry.storage, tmp_path / "new" / DATABASE)
    await back_up(gc_registry, tmp_path / "backup")
    with pytest.raises(BackupInvalid, match="restore into a fresh registry"):
        await restore(tmp_path / "backup", gc_registry.storage, database(gc_registry))
