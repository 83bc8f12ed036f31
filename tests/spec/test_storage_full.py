"""A full disk (not in the spec, whose codes have none for it): pushes are answered 507
Insufficient Storage in the spec's envelope with distribution's UNKNOWN code, the condition is
logged once rather than a traceback per request, reads go on, and pushes work again once space
is freed. In-process with the failure injected where the disk would report it, and on a real
tmpfs filled up (as root, where mounting one is allowed)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
    random_bytes,
    start_upload,
    to_json,
)
from sqlalchemy import Engine, event
from starlette.applications import Starlette

from portside.config.settings import Settings
from portside.registry.ingest import SMALL_BLOB_BYTES
from portside.server import errors
from portside.server.app import create_app
from portside.storage.filesystem import FilesystemBlobStore, FilesystemWriter

SettingsFactory = Callable[..., Settings]

pytestmark = pytest.mark.filesystem_only("a full disk and a full SQLite file, injected")


@pytest.fixture(autouse=True)
def full_disk_log(monkeypatch: pytest.MonkeyPatch) -> errors.FullDiskLog:
    """A log of its own per test: whether it warns does not depend on an earlier test's."""
    fresh = errors.FullDiskLog()
    monkeypatch.setattr(errors, "full_disk_log", fresh)
    return fresh


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as c:
            yield app, c
    finally:
        await app.state.registry.metadata.close()


def assert_insufficient_storage(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 507, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["code"] == "UNKNOWN"
    assert error["message"].startswith("insufficient storage")
    assert error["detail"]["reason"] == reason


def full_disk_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "insufficient storage" in r.getMessage()]


# injected: the writer's os.write fails as a full disk or quota makes it


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded")],
    ids=["ENOSPC", "EDQUOT"],
)
async def test_pushes_onto_a_full_disk_are_507_in_the_envelope_and_logged_once(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO)
    async with serving(make_settings()) as (_, client):
        pulled = await push_image(client, "app", "v1", layers=1)
        layer = random_bytes(256)
        location = await start_upload(client, "app")
        config = random_bytes(32)
        await push_blob(client, "app", config)
        manifest = to_json(image_manifest(descriptor(OCI_CONFIG, config), []))

        def full(self: FilesystemWriter, data: bytes) -> None:
            raise OSError(code, os.strerror(code))

        async def put_full(self: FilesystemBlobStore, key: str, data: bytes) -> None:
            raise OSError(code, os.strerror(code))

        with monkeypatch.context() as patched:
            patched.setattr(FilesystemWriter, "_write_all", full)
            patched.setattr(FilesystemBlobStore, "put", put_full)
            monolithic = await client.post(
                "/v2/app/blobs/uploads/", params={"digest": digest_of(layer)}, content=layer
            )
            chunk = await client.patch(
                location,
                content=layer,
                headers={"Content-Type": "application/octet-stream", "Content-Range": "0-255"},
            )
            manifest_put = await put_manifest(client, "app", "v2", manifest, None)
            # reads go on while the disk is full
            read = await client.get(f"/v2/app/manifests/{pulled.digest}")
            blob = await client.get(f"/v2/app/blobs/{next(iter(pulled.blobs))}")

        for response in (monolithic, chunk, manifest_put):
            assert_insufficient_storage(response, reason)
        assert (read.status_code, read.content) == (200, pulled.body)
        assert blob.status_code == 200
        assert (await client.get(f"/v2/app/blobs/{digest_of(layer)}")).status_code == 404
        warnings = full_disk_warnings(caplog)
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert warnings[0].levelno == logging.WARNING
        assert warnings[0].exc_info is None
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        # once space is freed, the same pushes work
        assert await push_blob(client, "app", layer) == digest_of(layer)
        assert (await put_manifest(client, "app", "v2", manifest, None)).status_code == 201


def test_the_full_disk_warning_repeats_at_most_once_a_minute_with_the_count() -> None:
    now = [0.0]
    log = errors.FullDiskLog(60.0, clock=lambda: now[0])
    full = errors.InsufficientStorage({"reason": "No space left on device"})
    records: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Catch()
    errors.log.addHandler(handler)
    try:
        for at in (0.0, 1.0, 30.0, 59.9, 60.0, 61.0, 200.0):
            now[0] = at
            log.report(full, "PATCH", "/v2/app/blobs/uploads/x")
    finally:
        errors.log.removeHandler(handler)

    assert len(records) == 3
    assert "1 request(s)" in records[0]
    assert "4 request(s)" in records[1]  # 1.0, 30.0, 59.9 and 60.0
    assert "2 request(s)" in records[2]


@pytest.mark.parametrize(
    ("size", "writes"),
    [
        (64, (FilesystemBlobStore, "_put")),  # put in place whole, after its check
        (SMALL_BLOB_BYTES + 1, (FilesystemWriter, "_write_all")),  # written aside as it comes
    ],
    ids=["small", "large"],
)
async def test_an_io_error_that_is_not_a_full_disk_stays_a_500(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    writes: tuple[type, str],
) -> None:
    """Only a full disk or quota becomes 507: any other failure is the registry's own, a 500
    with its traceback for the log (the transport re-raises it here)."""
    async with serving(make_settings()) as (_, client):

        def broken(*_: Any) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(*writes, broken)
        data = random_bytes(size)
        with pytest.raises(OSError, match="Input/output error"):
            await client.post(
                "/v2/app/blobs/uploads/", params={"digest": digest_of(data)}, content=data
            )


# the database: SQLite's own "database or disk is full", made real with max_page_count


async def test_a_full_sqlite_database_is_507_and_pushes_work_once_it_has_room(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLITE_FULL ("database or disk is full"), as SQLite reports it when the database cannot
    grow: here because `max_page_count` holds it at its size, as a full disk would."""
    async with serving(make_settings()) as (app, client):
        pulled = await push_image(client, "app", "v1", layers=1)
        config, layer = b'{"os":"linux"}', random_bytes()
        await push_blob(client, "app", config)
        await push_blob(client, "app", layer)
        # Annotations over a page long: the manifest's row needs new pages.
        document = image_manifest(
            descriptor(OCI_CONFIG, config),
            [descriptor(OCI_LAYER, layer)],
            annotations={"org.example.notes": "x" * 20_000},
        )
        engine: Engine = app.state.registry.metadata.engine

        def hold_size(dbapi_connection: Any, _record: Any) -> None:
            pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

        event.listen(engine, "connect", hold_size)
        engine.dispose()
        try:
            refused = await put_manifest(client, "app", "v2", to_json(document), None)
            read = await client.get(f"/v2/app/manifests/{pulled.digest}")
        finally:
            event.remove(engine, "connect", hold_size)
            engine.dispose()

        assert_insufficient_storage(refused, "the database's disk is full")
        assert (read.status_code, read.content) == (200, pulled.body)
        assert len(full_disk_warnings(caplog)) == 1
        assert (await client.get("/v2/app/manifests/v2")).status_code == 404
        accepted = await put_manifest(client, "app", "v2", to_json(document), None)
        assert accepted.status_code == 201, accepted.text


# real: a tmpfs of a few MiB, filled up


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    folder = Path(f"/tmp/portside-full-{uuid.uuid4().hex[:12]}")
    folder.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fill(path: Path) -> None:
    """Write zeros to path until the disk has no room left."""
    block = b"\0" * 65536
    with path.open("wb") as file, contextlib.suppress(OSError):
        while True:
            file.write(block)
            file.flush()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
async def test_a_really_full_disk_is_507_reads_go_on_and_pushes_resume_once_freed(
    make_settings: SettingsFactory,
    migrated_database: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with small_tmpfs("4m") as root:
        storage = root / "registry"
        async with serving(make_settings(storage_path=storage)) as (_, client):
            pulled = await push_image(client, "app", "v1", layers=1)
            location = await start_upload(client, "app")
            filler = root / "filler"
            fill(filler)  # the database's disk too: whichever a push needs first is full
            layer = random_bytes(512 * 1024)

            monolithic = await client.post(
                "/v2/app/blobs/uploads/", params={"digest": digest_of(layer)}, content=layer
            )
            chunk = await client.patch(
                location,
                content=layer,
                headers={"Content-Type": "application/octet-stream"},
            )
            read = await client.get(f"/v2/app/manifests/{pulled.digest}")
            blobs = [await client.get(f"/v2/app/blobs/{d}") for d in pulled.blobs]

            assert monolithic.status_code == 507, monolithic.text
            assert chunk.status_code == 507, chunk.text
            for response in (monolithic, chunk):
                [error] = response.json()["errors"]
                assert error["code"] == "UNKNOWN"
            assert (read.status_code, read.content) == (200, pulled.body)
            assert [b.content for b in blobs] == list(pulled.blobs.values())
            assert len(full_disk_warnings(caplog)) == 1
            # nothing of the refused pushes is left to hold space
            leftovers = [p for p in (storage / "uploads").rglob("*") if p.is_file()]
            assert [p.stat().st_size for p in leftovers] == [0] * len(leftovers)

            filler.unlink()
            assert await push_blob(client, "app", layer) == digest_of(layer)
            resumed = await client.patch(
                location,
                content=layer,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert resumed.status_code == 202, resumed.text
            await push_image(client, "app", "v2", layers=1)
