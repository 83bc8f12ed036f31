"""Log lines on stdout, one per event, in a form journald files by priority."""

from __future__ import annotations

import logging
import sys
from typing import Final

# syslog priorities, which journald reads from a `<N>` prefix on each line of a service's stdout.
PRIORITY: Final = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def configure(level: str, journald: bool) -> None:
    """Send every log record to stdout: with a syslog priority prefix under systemd (journald adds
    the time), with time and level in a terminal."""
    handler = logging.StreamHandler(sys.stdout)
    if journald:
        handler.setFormatter(JournalFormatter("%(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Their debug lines say nothing an operator of a registry needs.
    # httpx logs each request to an upstream with its full URL (presigned signatures too).
    for noisy in ("asyncio", "alembic", "sqlalchemy", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
