"""The systemd unit that the README installs is one systemd accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "deploy" / "portside.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # Point ExecStart at this venv's portside, since /opt/portside does not exist here.
    portside = Path(sys.executable).with_name("portside")
    text = UNIT.read_text().replace("/opt/portside/bin/portside", str(portside))
    unit = tmp_path / "portside.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stderr.splitlines() if "portside.service" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


def test_systemd_unit_runs_unprivileged_and_restarts() -> None:
    text = UNIT.read_text()
    assert "User=portside" in text
    assert "Restart=on-failure" in text
    assert "ExecStart=/opt/portside/bin/portside serve" in text
