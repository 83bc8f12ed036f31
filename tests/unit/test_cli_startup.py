"""`portside --help` and the commands' help answer without loading what only running a command
needs (alembic, SQLAlchemy, pydantic, passlib, the server): they took 3-5 s when cli.py imported
it all at module level."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("alembic", "sqlalchemy", "pydantic", "passlib", "granian", "rich", "httpx")

# Runs `portside ARGS` in a fresh interpreter, then prints the heavy packages it loaded.
PROBE = """
import json, sys
from portside.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = {heavy!r}
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
loaded += sorted(m for m in sys.modules if m.startswith(("portside.server", "portside.metadata")))
print(json.dumps(loaded), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["sync", "--help"], ["db", "--help"], ["user", "add", "--help"]],
)
def test_help_loads_nothing_heavy(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert "Usage:" in done.stdout or "version" in done.stdout
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []
