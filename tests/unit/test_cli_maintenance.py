"""`portside verify`, `backup` and `restore` as an operator runs them: exit statuses, and one
line, never a traceback, for what they cannot do."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette

from portside.cli import main
from portside.config.settings import Settings


def config(tmp_path: Path, storage: Path, **values: str) -> str:
    path = tmp_path / f"config-{storage.name}.yml"
    lines = [f"  {key}: {value}" for key, value in {"storage_path": str(storage), **values}.items()]
    path.write_text("dev:\n" + "\n".join(lines) + "\n")
    return str(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def push_blob(app: Starlette, data: bytes) -> str:
    """Pushed in-process, in a loop of its own: the commands run their own with asyncio.run."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    async def push() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as c:
            response = await c.post(
                "/v2/app/blobs/uploads/", params={"digest": digest}, content=data
            )
        await app.state.registry.metadata.close()
        return response

    response = asyncio.run(push())
    assert response.status_code == 201, response.text
    return digest


def test_verify_backup_and_restore_report_and_exit(
    app: Starlette, settings: Settings, tmp_path: Path
) -> None:
    digest = push_blob(app, b"a layer" * 100)
    registry = config(tmp_path, Path(settings.storage_path))

    result = run("verify", "--config", registry)
    assert (result.exit_code, result.output.strip()) == (0, "checked 1 blobs (700 bytes): all good")

    backed_up = run("backup", "--config", registry, str(tmp_path / "backup"))
    assert backed_up.exit_code == 0, backed_up.output
    assert "backed up 1 blobs (700 bytes)" in backed_up.output

    blob = Path(settings.storage_path) / "blobs" / "sha256" / digest[7:9] / digest[7:]
    blob.write_bytes(b"b" + blob.read_bytes()[1:])
    result = run("verify", "--config", registry)
    assert result.exit_code == 1
    assert "1 corrupt" in result.output

    fresh = config(tmp_path, tmp_path / "fresh")
    restored = run("restore", "--config", fresh, str(tmp_path / "backup"))
    assert restored.exit_code == 0, restored.output
    result = run("verify", "--config", fresh)
    assert (result.exit_code, result.output.strip()) == (0, "checked 1 blobs (700 bytes): all good")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify"], "no registry at"),
        (["backup", "DEST"], "no registry at"),
        (["restore", "SRC"], "no backup at"),
        (
            ["backup", "DEST", "--flavor", "pg"],
            "with PostgreSQL, use pg_dump and the bucket's versioning",
        ),
        (["import", "distribution", "SRC"], "holds no distribution storage"),
        (["import", "distribution", "--dry-run", "SRC"], "holds no distribution storage"),
    ],
)
def test_what_cannot_be_done_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    absent = tmp_path / "absent"
    path.write_text(
        f"dev:\n  storage_path: {absent}\n"
        f"pg:\n  storage_path: {absent}\n  database_url: postgresql+psycopg://db/registry\n"
    )
    args = [str(tmp_path / a) if a in ("DEST", "SRC") else a for a in args]

    result = run(*args, "--config", str(path))

    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--versions", ">=one"], "'one' is no version"),
        (["--tags", ""], "is empty or holds spaces"),
        (["--every", "soon"], "expected a duration"),
    ],
)
def test_sync_refuses_bad_filters_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    registry = config(tmp_path, tmp_path / "registry")

    result = run("sync", "--config", registry, *args, "http://127.0.0.1:9", "team/*")

    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "registry").exists()  # refused before anything was made


def test_sync_refuses_a_url_that_is_no_registry(tmp_path: Path) -> None:
    result = run("sync", "--config", config(tmp_path, tmp_path / "r"), "ftp://host", "team/app")

    assert result.exit_code == 2
    assert "is not http(s)://host[:port]" in result.output


def test_an_import_that_s3_refuses_midway_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    import portside.cli

    tree = tmp_path / "distribution"
    (tree / "docker" / "registry" / "v2" / "blobs").mkdir(parents=True)

    async def refused(*_: object) -> None:
        error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
        raise ClientError(error, "CopyObject")

    monkeypatch.setattr(portside.cli, "_import", refused)
    result = run(
        "import", "distribution", str(tree), "--dry-run",
        "--config", config(tmp_path, tmp_path / "storage"),
    )  # fmt: skip

    assert result.exit_code == 1
    assert "S3 refused the import" in result.output
    assert "AccessDenied" in result.output
    assert "run it again to resume" in result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
