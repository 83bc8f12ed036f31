"""The entry point each server worker process imports: the app for the settings `serve` resolved.

`portside serve` resolves and validates the configuration once, then hands it to its workers as
JSON in one environment variable, so that every worker runs exactly the same settings.
"""

from __future__ import annotations

import os
from typing import Final

from starlette.applications import Starlette

from portside.config.settings import Settings
from portside.server import logs
from portside.server.app import create_app

SETTINGS_VARIABLE: Final = "PORTSIDE_RESOLVED_SETTINGS"
JOURNALD_VARIABLE: Final = "PORTSIDE_JOURNALD"


def app() -> Starlette:
    settings = Settings.model_validate_json(os.environ[SETTINGS_VARIABLE])
    logs.configure(
        "debug" if settings.debug else settings.loglevel,
        journald=os.environ.get(JOURNALD_VARIABLE) == "1",
    )
    return create_app(settings)
