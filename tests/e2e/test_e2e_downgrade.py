"""Rolling back (README: Upgrading): `portside db downgrade` refuses while `portside serve` serves
the config's address, takes the schema back once it is stopped, and `serve` migrates it up again
at its next start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from portside.metadata.migrate import history, upgrade

from .server import FLAVOR, PORTSIDE, PortsideServer


def portside(
    server: PortsideServer, *args: str, answer: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PORTSIDE), *args, "--config", str(server.config_path), "--flavor", FLAVOR],
        input=answer,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_downgrade_waits_for_the_server_to_stop_and_serve_upgrades_again(tmp_path: Path) -> None:
    if not PORTSIDE.exists():
        pytest.skip(f"no portside executable at {PORTSIDE}")
    revisions = [r.revision for r in history()]
    older, head = revisions[-2], revisions[-1]
    server = PortsideServer(tmp_path, workers=1)
    server.settings["listen"] = server.host  # so that the commands know the address too
    server.start()
    try:
        refused = portside(server, "db", "downgrade", older, "--yes")
        while_serving = portside(server, "db", "current")
    finally:
        server.stop()

    assert refused.returncode == 1
    assert f"a portside server is serving on {server.host}" in refused.stderr
    assert while_serving.stdout.startswith(f"{head};")

    done = portside(server, "db", "downgrade", older, "--yes")
    after = portside(server, "db", "current")

    assert done.returncode == 0, done.stderr
    assert after.stdout == f"{older}; this version's newest: {head}\n"

    server.start()
    server.stop()
    assert portside(server, "db", "current").stdout.startswith(f"{head};")


def test_what_downgrade_cannot_do_is_one_line(tmp_path: Path) -> None:
    server = PortsideServer(tmp_path)
    server.config_path.write_text(f"{FLAVOR}:\n  storage_path: {server.storage_path}\n")
    database = server.storage_path / "registry.db"
    head = history()[-1].revision

    absent = portside(server, "db", "downgrade", "0001", "--yes")
    assert (absent.returncode, absent.stderr) == (1, f"Error: no metadata database at {database}\n")
    assert not server.storage_path.exists()  # nothing made

    server.storage_path.mkdir()
    upgrade(f"sqlite:///{database}")
    unknown = portside(server, "db", "downgrade", "12", "--yes")
    at_head = portside(server, "db", "downgrade", head, "--yes")
    declined = portside(server, "db", "downgrade", "0001", answer="n\n")

    assert unknown.returncode == 1
    assert unknown.stderr.startswith("Error: no revision '12': this version has 0001, ")
    assert unknown.stderr.endswith(f", {head}\n")
    assert at_head.stderr == f"Error: the database is at {head}, not above {head}\n"
    assert declined.returncode == 1
    assert "undo 0002  Manifest descriptions" in declined.stderr
    assert f"undo {head}  " in declined.stderr
    assert "Aborted!" in declined.stderr
    assert portside(server, "db", "current").stdout.startswith(f"{head};")
