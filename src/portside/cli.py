"""The `portside` command: serve, and the config checks an operator runs before a restart."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import click

from portside.config.loader import ConfigError, describe, load_settings, sample_config
from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server import logs
from portside.server.worker import JOURNALD_VARIABLE, SETTINGS_VARIABLE

log = logging.getLogger("portside")

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML config file [default: $DOCKER_REGISTRY_CONFIG, else the built-in default].",
)
flavor_option = click.option(
    "--flavor", help="Flavor (top-level section) of the config [default: $SETTINGS_FLAVOR or dev]."
)


def _load(config_file: str | None, flavor: str | None, **overrides: object) -> Settings:
    try:
        return load_settings(
            config_file, flavor, overrides={k: v for k, v in overrides.items() if v is not None}
        )
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.group()
@click.version_option(package_name="portside")
def main() -> None:
    """Portside, a private container image registry (OCI Distribution v1.1)."""


@main.command()
@config_option
@flavor_option
@click.option("--listen", help="HOST:PORT to listen on, overriding the config's `listen`.")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes, overriding config.")
def serve(
    config_file: str | None, flavor: str | None, listen: str | None, workers: int | None
) -> None:
    """Serve the registry until SIGINT or SIGTERM, then finish requests in flight and stop."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    settings = _load(config_file, flavor, listen=listen, workers=workers)
    journald = "JOURNAL_STREAM" in os.environ
    level = "debug" if settings.debug else settings.loglevel
    logs.configure(level, journald)
    storage_path = Path(settings.storage_path)
    if settings.storage == "local":  # with s3, storage_path is a key prefix in the bucket
        storage_path.mkdir(parents=True, exist_ok=True)
        if storage_path.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve()):
            log.warning("storage_path %s is under /tmp: images may vanish at reboot", storage_path)
    upgrade(settings.metadata_url)
    os.environ[SETTINGS_VARIABLE] = settings.model_dump_json()
    os.environ[JOURNALD_VARIABLE] = "1" if journald else "0"
    log.info(
        "serving on http://%s with %d workers, %s storage at %s",
        settings.listen,
        settings.workers,
        settings.storage,
        storage_path,
    )
    Granian(
        "portside.server.worker:app",
        factory=True,
        interface=Interfaces.ASGI,
        address=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_enabled=True,
        log_level=LogLevels("warn" if level == "warning" else level),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=30,
    ).serve()


@main.group()
def config() -> None:
    """Check or print configuration."""


@config.command("check")
@config_option
@flavor_option
def config_check(config_file: str | None, flavor: str | None) -> None:
    """Validate a config file and flavor; print the resolved settings, secrets masked."""
    click.echo(describe(_load(config_file, flavor)), nl=False)


@config.command("sample")
def config_sample() -> None:
    """Print the documented sample config."""
    sys.stdout.write(sample_config())
