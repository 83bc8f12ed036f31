"""`portside db downgrade`: every migration, whatever is head, goes down to 0001 one revision at a
time and up again, on SQLite and PostgreSQL, with a registry's content in the tables; what the
initial schema holds (repositories, blobs, links, manifests and their references, tags) is the
same at every step, and the registry serves and takes pushes again at head."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from portside.config.settings import Settings
from portside.metadata import migrate
from portside.server.app import create_app
from postgres import schema

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

# The initial schema's columns (0001), which every later revision keeps.
KEPT = {
    "repositories": "name, created_at",
    "blobs": "digest, size, created_at",
    "repository_blobs": "repository_id, digest, created_at",
    "manifests": "repository_id, digest, media_type, size, artifact_type, subject, created_at",
    "manifest_references": "repository_id, manifest_digest, digest, kind",
    "tags": "repository_id, name, digest, updated_at",
}

# What 0010 keeps by triggers, and makes again from the tables when it is applied anew.
SUMMARIES = {"repositories": "name, size, pushed_at, description"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with schema(request.getfixturevalue("postgres_url")) as url:
        yield url


def digest_of(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


async def push(url: str, storage: Path, repository: str, tag: str, seed: bytes) -> str:
    """An image of one layer, and an artifact whose subject it is; the image's digest."""
    app = create_app(Settings(storage_path=storage, database_url=url, workers=1))
    transport = httpx.ASGITransport(app=app)
    layer, config = seed * 64, json.dumps({"seed": seed.hex()}).encode()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as c:
            for blob in (layer, config):
                stored = await c.post(
                    f"/v2/{repository}/blobs/uploads/",
                    params={"digest": digest_of(blob)},
                    content=blob,
                )
                assert stored.status_code == 201, stored.text
            image = manifest(config, [layer])
            pushed = await c.put(
                f"/v2/{repository}/manifests/{tag}",
                content=image,
                headers={"Content-Type": OCI_MANIFEST},
            )
            assert pushed.status_code == 201, pushed.text
            subject = {"mediaType": OCI_MANIFEST, "digest": digest_of(image), "size": len(image)}
            referrer = manifest(config, [], subject=subject, artifactType="application/x.sig")
            attached = await c.put(
                f"/v2/{repository}/manifests/{digest_of(referrer)}",
                content=referrer,
                headers={"Content-Type": OCI_MANIFEST},
            )
            assert attached.status_code == 201, attached.text
            pulled = await c.get(f"/v2/{repository}/referrers/{digest_of(image)}")
            assert [m["digest"] for m in pulled.json()["manifests"]] == [digest_of(referrer)]
    finally:
        await app.state.registry.metadata.close()
    return digest_of(image)


def manifest(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    def descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": digest_of(blob), "size": len(blob)}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/octet-stream", layer) for layer in layers],
            **extra,
        }
    ).encode()


def kept_rows(url: str, kept: dict[str, str] = KEPT) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table: sorted(
                    tuple(row) for row in conn.execute(text(f"SELECT {columns} FROM {table}"))
                )
                for table, columns in kept.items()
            }
    finally:
        engine.dispose()


async def test_every_migration_goes_down_to_the_first_and_up_again(
    database_url: str, tmp_path: Path
) -> None:
    revisions = [r.revision for r in migrate.history()]
    migrate.upgrade(database_url)
    await push(database_url, tmp_path, "team/app", "v1", b"first")
    await push(database_url, tmp_path, "team/web", "v1", b"second")
    before = kept_rows(database_url)
    assert all(before.values())
    summaries = kept_rows(database_url, SUMMARIES)

    for revision in reversed(revisions[:-1]):
        migrate.downgrade(database_url, revision)
        assert migrate.current(database_url) == revision
        assert kept_rows(database_url) == before, f"at {revision}"
    migrate.upgrade(database_url)

    assert migrate.current(database_url) == revisions[-1]
    assert kept_rows(database_url) == before
    assert kept_rows(database_url, SUMMARIES) == summaries  # made again from the tables
    await push(database_url, tmp_path, "team/app", "v2", b"third")

    def size(rows: dict[str, list[tuple[Any, ...]]]) -> int:
        return int(next(row[1] for row in rows["repositories"] if row[0] == "team/app"))

    # The triggers are back: the new blobs and manifests count in the repository's size, as
    # much as the first push's did (seeds of one length make blobs and manifests of one size).
    assert size(kept_rows(database_url, SUMMARIES)) == 2 * size(summaries)


def test_a_downgrade_names_what_it_cannot_do(database_url: str) -> None:
    with pytest.raises(migrate.UnknownRevision, match="at no revision"):
        migrate.downgrade(database_url, "0001")
    migrate.upgrade(database_url)
    head = migrate.history()[-1].revision
    with pytest.raises(migrate.UnknownRevision, match="no revision '9999': this version has 0001"):
        migrate.downgrade(database_url, "9999")
    with pytest.raises(migrate.UnknownRevision, match=f"is at {head}, not above {head}"):
        migrate.downgrade(database_url, head)
    assert migrate.current(database_url) == head
