"""The entry point each server worker process imports: the app for the settings `serve` resolved.

`portside serve` resolves and validates the configuration once, then hands it to its workers as
JSON in one environment variable, so that every worker runs exactly the same settings.
"""

from __future__ import annotations

import os
import signal
from typing import Final

from starlette.types import ASGIApp

from portside.config.settings import Settings
from portside.server import connections, logs
from portside.server.app import create_app

SETTINGS_VARIABLE: Final = "PORTSIDE_RESOLVED_SETTINGS"
JOURNALD_VARIABLE: Final = "PORTSIDE_JOURNALD"


def app() -> ASGIApp:
    # A forked worker keeps the parent's SIGTERM and SIGINT handlers (granian 2.8.9), which only
    # set a flag on the parent's copy, until granian installs its own once the app is made: a
    # stop in that window (a server stopped right after it answered, while a worker was still
    # starting) was lost, and the worker served on until workers_kill_timeout (30 s). It serves
    # nothing yet: the signal ends it at once.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)
    settings = Settings.model_validate_json(os.environ[SETTINGS_VARIABLE])
    logs.configure(
        "debug" if settings.debug else settings.loglevel,
        journald=os.environ.get(JOURNALD_VARIABLE) == "1",
        log_format=settings.log_format,
    )
    connections.raise_open_file_limit()
    # granian closes no idle connection by itself: this worker's watchdog does (a daemon
    # thread, gone with the process).
    guarded, _ = connections.guard(
        create_app(settings),
        settings.port,
        settings.http_header_timeout.total_seconds(),
        settings.http_idle_timeout.total_seconds(),
    )
    return guarded
