"""Bring a metadata database to the newest schema with Alembic; run once before workers start."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config

from portside.metadata.sql import make_engine


def upgrade(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            config = Config()
            config.set_main_option(
                "script_location", str(files("portside.metadata") / "migrations")
            )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()
