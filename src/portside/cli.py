"""The `portside` command: serve, collect garbage, and the config checks an operator runs before a
restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from portside.auth.schemes import Scheme

# Only the standard library and click at module level: each command imports what it runs, so
# that `portside --help` and the light commands do not load alembic, SQLAlchemy, pydantic and
# the server (4.2 s of imports on the loaded machine).
if TYPE_CHECKING:
    from portside.config.settings import Settings
    from portside.registry.distribution_tree import DistributionTree, TreeSource
    from portside.registry.gc import Summary
    from portside.registry.import_distribution import Report as ImportReport
    from portside.registry.verify import Report

log = logging.getLogger("portside")
_T = TypeVar("_T")

# Connections the kernel queues for a worker that has not accepted them yet (capped by the
# net.core.somaxconn sysctl).
BACKLOG = 4096

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="YAML config file [default: $DOCKER_REGISTRY_CONFIG, else the built-in default].",
)
flavor_option = click.option(
    "--flavor", help="Flavor (top-level section) of the config [default: $SETTINGS_FLAVOR or dev]."
)


def _load(
    config_file: str | None,
    flavor: str | None,
    warnings: list[str] | None = None,
    **overrides: object,
) -> Settings:
    from portside.config.loader import ConfigError, load_settings

    try:
        return load_settings(
            config_file,
            flavor,
            overrides={k: v for k, v in overrides.items() if v is not None},
            warnings=warnings,
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
    from portside.server import logs, ownership, preflight
    from portside.server.worker import JOURNALD_VARIABLE, SETTINGS_VARIABLE

    warnings: list[str] = []
    settings = _load(config_file, flavor, warnings, listen=listen, workers=workers)
    journald = "JOURNAL_STREAM" in os.environ
    level = "debug" if settings.debug else settings.loglevel
    logs.configure(level, journald, settings.log_format)
    for warning in warnings:
        log.warning("config: %s", warning)
    preflight.check_or_exit(settings)
    storage_path = Path(settings.storage_path)
    if settings.storage == "local":  # with s3, storage_path is a key prefix in the bucket
        storage_path.mkdir(parents=True, exist_ok=True)
        if _is_temporary(storage_path):
            log.warning("storage_path %s is under /tmp: images may vanish at reboot", storage_path)
    database = ownership.sqlite_file(settings.metadata_url)
    if database is not None and _is_temporary(database):
        # The classic sample's sqlalchemy_index_database is /tmp/docker-registry.db.
        log.warning("the metadata database %s is under /tmp: it may vanish at reboot", database)
    _migrate(settings.metadata_url)
    os.environ[SETTINGS_VARIABLE] = settings.model_dump_json()
    os.environ[JOURNALD_VARIABLE] = "1" if journald else "0"
    if not settings.tls and not _is_loopback(settings.host) and settings.public_url is None:
        log.warning(
            "serving plain HTTP beyond loopback on %s: set tls_certificate and tls_key, or put "
            "a TLS proxy in front and set public_url",
            settings.listen,
        )
    log.info(
        "serving on %s://%s with %d workers, %s storage at %s",
        "https" if settings.tls else "http",
        settings.listen,
        settings.workers,
        settings.storage,
        storage_path,
    )
    with _listen_address(settings.host, settings.port), _worker_metrics(settings):
        _granian(settings, level).serve()


@contextlib.contextmanager
def _worker_metrics(settings: Settings) -> Iterator[None]:
    """With metrics, a folder for the workers' values, and the listener of metrics.listen."""
    from portside.server.metrics_folder import worker_metrics_folder
    from portside.server.metrics_listener import MetricsListener

    metrics = settings.metrics
    if not metrics.enabled:
        yield
        return
    with worker_metrics_folder() as folder:
        listener = None
        if metrics.listen is not None:
            try:
                listener = MetricsListener(metrics.listen_host, metrics.listen_port, folder)
            except OSError as error:
                reason = (error.strerror or str(error)).lower()
                click.echo(
                    f"portside: cannot listen on metrics.listen {metrics.listen}: {reason}",
                    err=True,
                )
                sys.exit(1)
            listener.start()
            log.info("serving metrics on http://%s/metrics", metrics.listen)
        try:
            yield
        finally:
            if listener is not None:
                listener.stop()


def _migrate(url: str) -> None:
    """Bring the metadata database to this version's schema, as `serve` does at start."""
    from portside.metadata.migrate import upgrade

    upgrade(url)


def _is_temporary(path: Path) -> bool:
    return path.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())


def _granian(settings: Settings, level: str) -> Any:
    """The granian server: HTTP/1 request heads must arrive within http_header_timeout; each
    worker takes up to http_max_connections connections (granian's `backpressure`, a permit per
    connection), so that idle sockets, closed by the worker's watchdog (server/connections.py)
    after http_header_timeout or http_idle_timeout, cannot lock clients out."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    header_ms = int(settings.http_header_timeout.total_seconds() * 1000)
    return Granian(
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
        backlog=BACKLOG,
        backpressure=settings.http_max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=header_ms),
        **_tls_options(settings),
    )


def _listen_address(host: str, port: int) -> contextlib.AbstractContextManager[object]:
    """Refuse to serve on an address another server listens on, in one line, exit status 1.

    granian binds with SO_REUSEPORT, so a second server of the same user on the same port would
    start and the kernel would split connections between the two. A probe socket bound without
    SO_REUSEPORT (with SO_REUSEADDR, so connections in TIME_WAIT of a previous run do not count)
    fails on any listener there, portside or not. Against two servers starting at once, each
    holds, while it serves, an abstract unix socket named after the address: the second one's
    bind fails, whatever the timing. (Abstract sockets live in the network namespace, as ports do.)
    """
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def refuse(reason: str) -> NoReturn:
        click.echo(f"portside: cannot listen on {shown}: {reason}", err=True)
        sys.exit(1)

    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(_listen_lock(host, port))
    except OSError:
        lock.close()
        refuse("address already in use (another portside server is starting or serving there)")
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as error:
        lock.close()
        refuse(f"cannot resolve {host!r}: {error.strerror or error}")
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                lock.close()
                if error.errno == errno.EADDRINUSE:
                    refuse("address already in use (another server is listening there)")
                refuse((error.strerror or str(error)).lower())
    return contextlib.closing(lock)


def _listen_lock(host: str, port: int) -> str:
    """The abstract unix socket a server holds while it serves on host:port."""
    return f"\0portside-listen {host} {port}"


def _tls_options(settings: Settings) -> dict[str, Any]:
    """granian's TLS arguments: HTTPS, with HTTP/2 offered by ALPN (granian's `http` is auto),
    from TLS 1.2 on as distribution does; with tls_client_ca, client certificates are required."""
    from granian.constants import SSLProtocols

    if not settings.tls:
        return {}
    options: dict[str, Any] = {
        "ssl_cert": settings.tls_certificate,
        "ssl_key": settings.tls_key,
        "ssl_protocol_min": SSLProtocols.tls12,
    }
    if settings.tls_client_ca is not None:
        options |= {"ssl_ca": settings.tls_client_ca, "ssl_client_verify": True}
    return options


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@config_option
@flavor_option
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--grace-period",
    help="gc_grace_period for this run: 90s, 30m, 1h, 2d or seconds (0: no grace).",
)
def gc(
    config_file: str | None, flavor: str | None, dry_run: bool, grace_period: str | None
) -> None:
    """Collect garbage: the tags retention rules remove (policies.retention), untagged
    manifests (with gc_untagged: collect), blob links and blobs that nothing references,
    abandoned uploads. Safe while the registry serves: pushes go on. Prints what was, or would
    be, removed (a dry run leaves retention out: `portside retention --dry-run` shows it)."""
    from rich.console import Console

    from portside.server import ownership

    settings = _load(config_file, flavor, gc_grace_period=grace_period)
    if settings.storage == "local" and not Path(settings.storage_path).is_dir():
        raise click.ClickException(f"no registry at {settings.storage_path}: nothing to collect")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:  # run as root: registry.db and its lock made the service's, not root's
        ownership.prepare_database(settings)
    except ownership.OwnerUnclear as error:
        raise click.ClickException(str(error)) from None
    _migrate(settings.metadata_url)
    summary = asyncio.run(_collect(settings, dry_run, Console(stderr=True)))
    Console().print(_summary_table(summary, dry_run))


async def _collect(settings: Settings, dry_run: bool, console: Any) -> Summary:
    from rich.progress import Progress

    from portside.metadata.sql import SqlMetadataStore
    from portside.registry.gc import CollectionRunning, Collector
    from portside.server.app import STORAGE_DRIVERS
    from portside.server.collector import gc_policy
    from portside.server.policies import build_retention

    storage = STORAGE_DRIVERS[settings.storage](settings)
    metadata = SqlMetadataStore(settings.metadata_url)
    retention = build_retention(settings, metadata)
    collector = Collector(storage, metadata, gc_policy(settings), retention=retention)
    try:
        with Progress(console=console, transient=True) as bar:
            return await collector.collect(dry_run=dry_run, progress=_Bar(bar))
    except CollectionRunning as error:
        raise click.ClickException(str(error)) from None
    finally:
        await metadata.close()


class _Bar:
    """registry.gc's progress on a rich progress bar: one line a phase."""

    def __init__(self, progress: Any) -> None:
        self._progress = progress
        self._task: Any = None
        self._done = 0

    def start(self, phase: str, total: int | None) -> None:
        if self._task is not None:  # the last phase is over, whatever it expected
            self._progress.update(self._task, total=self._done, completed=self._done)
        self._task = self._progress.add_task(phase, total=total)
        self._done = 0

    def advance(self, steps: int = 1) -> None:
        self._done += steps
        self._progress.update(self._task, completed=self._done)


def _summary_table(summary: Summary, dry_run: bool) -> Any:
    from rich.filesize import decimal
    from rich.table import Table

    table = Table(title="garbage collection" + (" (dry run)" if dry_run else ""))
    table.add_column("")
    table.add_column("would remove" if dry_run else "removed", justify="right")
    table.add_column("bytes", justify="right")
    for what, count, size in summary.rows():
        table.add_row(what, str(count), "" if size is None else f"{size:,}")
    freed = summary.bytes_freed
    verb = "would free" if dry_run else "freed"
    table.caption = f"{verb} {freed:,} bytes ({decimal(freed)})"
    return table


@main.group()
def config() -> None:
    """Check or print configuration."""


@config.command("check")
@config_option
@flavor_option
def config_check(config_file: str | None, flavor: str | None) -> None:
    """Validate a config file and flavor; print the resolved settings, secrets masked, and on
    standard error what the config asks that Portside does not do."""
    from portside.config.loader import describe

    warnings: list[str] = []
    settings = _load(config_file, flavor, warnings)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(describe(settings), nl=False)


@config.command("sample")
def config_sample() -> None:
    """Print the documented sample config."""
    from portside.config.loader import sample_config

    sys.stdout.write(sample_config())


# Users of the htpasswd file ---------------------------------------------------------------------

htpasswd_option = click.option(
    "--htpasswd",
    "htpasswd_file",
    type=click.Path(dir_okay=False),
    help="The htpasswd file [default: auth.htpasswd.path of the config].",
)


def _htpasswd_path(htpasswd_file: str | None, config_file: str | None, flavor: str | None) -> Path:
    if htpasswd_file:
        return Path(htpasswd_file)
    settings = _load(config_file, flavor)
    if settings.auth is None or settings.auth.htpasswd is None:
        raise click.ClickException("give --htpasswd FILE, or a config with auth.htpasswd.path")
    return settings.auth.htpasswd.path


def _own_htpasswd(path: Path, config_file: str | None, flavor: str | None) -> None:
    """Run as root: the htpasswd file (made empty if new) and its lock owned as the service
    needs them, so the file add_user writes in their place keeps that owner (auth/_files.py).
    The service's user is told from the owner of the file or its folder, or of storage_path
    when a config was named."""
    from portside.server import ownership

    service = None
    if config_file or os.environ.get("DOCKER_REGISTRY_CONFIG"):
        service = ownership.service_owner(_load(config_file, flavor))
    try:
        owner = ownership.owner_for(path, service=service)
    except ownership.OwnerUnclear as error:
        raise click.ClickException(str(error)) from None
    if owner is not None:
        ownership.create_owned(path, owner)
        ownership.create_owned(path.with_name(path.name + ".lock"), owner)


def _read_password(from_stdin: bool) -> str:
    """From the first line of stdin, or a hidden prompt asked twice; never from arguments,
    which other users of the machine can read in the process list."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.ClickException("empty password")
    return password


Handler = Callable[..., None]


def _user_command(name: str, help_: str) -> Callable[[Handler], click.Command]:
    """A `portside user` subcommand taking the htpasswd file by option or from the config."""

    def decorate(function: Handler) -> click.Command:
        for option in (flavor_option, config_option, htpasswd_option):
            function = option(function)
        return user.command(name, help=help_)(function)

    return decorate


def _with_password_options(function: Handler) -> Handler:
    options = [
        click.option(
            "--password-stdin",
            is_flag=True,
            help="Read the password from the first line of standard input instead of a prompt.",
        ),
        click.option(
            "--scheme",
            type=click.Choice([scheme.value for scheme in Scheme]),
            default=Scheme.BCRYPT.value,
            show_default=True,
            help="Hash, as htpasswd -B (bcrypt), -5, -2, -m, -s, -d, -p.",
        ),
        click.option(
            "--rounds", type=click.IntRange(4, 999_999_999), help="bcrypt cost or SHA rounds."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.group()
def user() -> None:
    """Manage the users of the htpasswd file (no apache2-utils needed)."""


@_user_command("add", "Add a user (its password is asked for, or read from stdin).")
@click.argument("username")
@_with_password_options
@click.option("--replace", is_flag=True, help="Change the password of an existing user.")
def user_add(
    htpasswd_file: str | None,
    config_file: str | None,
    flavor: str | None,
    username: str,
    password_stdin: bool,
    scheme: str,
    rounds: int | None,
    replace: bool,
) -> None:
    from portside.auth import htpasswd

    path = _htpasswd_path(htpasswd_file, config_file, flavor)
    try:
        htpasswd.check_username(username)
        if not replace and username in htpasswd.list_users(path):
            raise htpasswd.UserExists(f"user {username!r} exists (--replace changes its password)")
        password = _read_password(password_stdin)
        _own_htpasswd(path, config_file, flavor)
        existed = htpasswd.add_user(
            path,
            username,
            password,
            scheme=scheme,
            rounds=rounds,
            replace=replace,
        )
    except (htpasswd.InvalidUser, htpasswd.UserExists, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{'updated' if existed else 'added'} user {username} in {path}")
    _audit_user(config_file, flavor, "user-passwd" if existed else "user-add", username)


@_user_command("passwd", "Change a user's password.")
@click.argument("username")
@_with_password_options
def user_passwd(
    htpasswd_file: str | None,
    config_file: str | None,
    flavor: str | None,
    username: str,
    password_stdin: bool,
    scheme: str,
    rounds: int | None,
) -> None:
    from portside.auth import htpasswd

    path = _htpasswd_path(htpasswd_file, config_file, flavor)
    if username not in htpasswd.list_users(path):
        raise click.ClickException(f"no user {username!r} in {path}")
    try:
        password = _read_password(password_stdin)
        _own_htpasswd(path, config_file, flavor)
        htpasswd.set_password(path, username, password, scheme=scheme, rounds=rounds)
    except (htpasswd.InvalidUser, htpasswd.UserNotFound, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"changed the password of {username} in {path}")
    _audit_user(config_file, flavor, "user-passwd", username)


@_user_command("remove", "Remove a user.")
@click.argument("username")
def user_remove(
    htpasswd_file: str | None, config_file: str | None, flavor: str | None, username: str
) -> None:
    from portside.auth import htpasswd

    path = _htpasswd_path(htpasswd_file, config_file, flavor)
    if path.exists():
        _own_htpasswd(path, config_file, flavor)
    try:
        htpasswd.remove_user(path, username)
    except htpasswd.UserNotFound:
        raise click.ClickException(f"no user {username!r} in {path}") from None
    click.echo(f"removed user {username} from {path}")
    _audit_user(config_file, flavor, "user-remove", username)


def _audit_user(config_file: str | None, flavor: str | None, action: str, username: str) -> None:
    """Audit a change of the htpasswd file where a config names the registry (and its log)."""
    if not (config_file or os.environ.get("DOCKER_REGISTRY_CONFIG")):
        return
    from portside.server.audit_log import record_user_change

    warning = asyncio.run(record_user_change(_load(config_file, flavor), action, username))
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)


# The audit log ----------------------------------------------------------------------------------


def _moment(_context: click.Context, _parameter: click.Parameter, value: str | None) -> Any:
    from portside.server.audit_log import parse_when

    try:
        return None if value is None else parse_when(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@main.command()
@config_option
@flavor_option
@click.option(
    "--since", callback=_moment, help="From this time on: 2024-05-01, 2024-05-01T12:00 or 7d (ago)."
)
@click.option("--until", callback=_moment, help="Before this time, in the same forms.")
@click.option("--user", help="Only what this user did (or, for failed logins, tried).")
@click.option("--repository", help="Only what concerned this repository.")
@click.option(
    "--action",
    help="Only this action: push, tag (a push that moved a tag), delete, mount, login, "
    "login-failed, login-throttled, denied, gc-delete, retention-delete, user-add, "
    "user-passwd, user-remove, token-create, token-revoke.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="The newest this many entries that match.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def audit(
    config_file: str | None,
    flavor: str | None,
    since: Any,
    until: Any,
    user: str | None,
    repository: str | None,
    action: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List the audit log, oldest first: who did what, when and from where."""
    import json

    from portside.metadata.base import AuditQuery
    from portside.metadata.engine import DatabaseError
    from portside.server import audit_log, ownership

    settings = _load(config_file, flavor)
    if settings.audit is None or not settings.audit.enabled:
        click.echo("warning: the config has no audit section: nothing new is recorded", err=True)
    database = ownership.sqlite_file(settings.metadata_url)
    if database is not None and not database.exists():
        raise click.ClickException(f"no metadata database at {database}")
    query = AuditQuery(since, until, user, repository, action, limit)
    try:
        records = asyncio.run(audit_log.read_entries(settings, query))
    except DatabaseError as error:  # down, or not migrated yet: `portside serve` migrates
        raise click.ClickException(f"cannot read the audit log: {error.orig}") from None
    for record in records:
        click.echo(json.dumps(audit_log.as_json(record)) if as_json else audit_log.as_line(record))


@_user_command("list", "List the users, one a line.")
def user_list(htpasswd_file: str | None, config_file: str | None, flavor: str | None) -> None:
    from portside.auth import htpasswd

    for name in htpasswd.list_users(_htpasswd_path(htpasswd_file, config_file, flavor)):
        click.echo(name)


# Keeping the registry in shape: repositories, retention, quotas, robot tokens ----------------


def _ready(config_file: str | None, flavor: str | None) -> Settings:
    """The settings, with the metadata database made the service's and migrated (as gc does)."""
    from portside.server import ownership

    settings = _load(config_file, flavor)
    try:
        ownership.prepare_database(settings)
    except ownership.OwnerUnclear as error:
        raise click.ClickException(str(error)) from None
    _migrate(settings.metadata_url)
    return settings


def _when(moment: Any) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


@main.group()
def repo() -> None:
    """Manage repositories."""


@repo.command("delete")
@config_option
@flavor_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def repo_delete(config_file: str | None, flavor: str | None, name: str, yes: bool) -> None:
    """Delete repository NAME: its tags, manifests and blob links; its blobs go with the next
    garbage collection (those no other repository holds). Refused while it has an immutable
    tag."""
    from portside.registry.errors import RegistryError
    from portside.server import housekeeping

    settings = _ready(config_file, flavor)
    if not yes:
        click.confirm(f"Delete the repository {name} and all its tags?", abort=True)
    try:
        removed = asyncio.run(housekeeping.delete_repository(settings, name))
    except RegistryError as error:
        raise click.ClickException(error.describe() + f" ({name})") from None
    click.echo(
        f"deleted {name}: {removed.manifests} manifest(s), {removed.tags} tag(s); its blobs "
        "go with the next garbage collection"
    )


@main.command()
@config_option
@flavor_option
@click.option("--dry-run", is_flag=True, help="Say what would be removed, and why; remove nothing.")
def retention(config_file: str | None, flavor: str | None, dry_run: bool) -> None:
    """Apply the retention rules (policies.retention) now, as each garbage collection does
    first: remove the tags they select, and the manifests left untagged. Prints what went
    (or would go) and why; blobs go with the next `portside gc`."""
    from rich.console import Console
    from rich.table import Table

    from portside.server import housekeeping

    settings = _ready(config_file, flavor)
    if not settings.policies.retention:
        click.echo("no retention rules (policies.retention): nothing to remove", err=True)
        return
    removals = asyncio.run(housekeeping.retention(settings, dry_run))
    table = Table(title="retention" + (" (dry run)" if dry_run else ""))
    for column in ("repository", "tag", "digest", "pushed", "pulled", "rule", "why"):
        table.add_column(column)
    for removal in removals:
        tag = removal.tag
        table.add_row(
            removal.repository,
            tag.name,
            tag.digest[:19],
            _when(tag.pushed_at),
            _when(tag.pulled_at),
            removal.rule,
            removal.reason,
        )
    verb = "would remove" if dry_run else "removed"
    table.caption = f"{verb} {len(removals)} tag(s)"
    Console(width=200).print(table)


@main.command()
@config_option
@flavor_option
def quota(config_file: str | None, flavor: str | None) -> None:
    """Show each namespace's usage against its quota (policies.quotas): bytes stored (each blob
    once), repositories, tags."""
    from rich.console import Console
    from rich.table import Table

    from portside.server import housekeeping

    settings = _ready(config_file, flavor)
    rows = asyncio.run(housekeeping.quota_usage(settings))
    table = Table(title="usage by namespace")
    for column in ("namespace", "rule", "bytes", "repositories", "tags"):
        table.add_column(column, justify="left" if column in ("namespace", "rule") else "right")

    def against(used: int, limit: int | None) -> str:
        if limit is None:
            return f"{used:,}"
        share = f" ({used / limit:.0%})" if limit else ""
        return f"{used:,} / {limit:,}{share}"

    for row in rows:
        rule = row.quota.rule if row.quota is not None else None
        table.add_row(
            row.namespace or '""',
            row.quota.label if row.quota is not None else "",
            against(row.footprint.bytes, rule.max_bytes if rule else None),
            against(row.footprint.repositories, rule.max_repositories if rule else None),
            against(row.footprint.tags, rule.max_tags if rule else None),
        )
    Console(width=200).print(table)


@main.group()
def token() -> None:
    """Robot accounts: access tokens for CI, used as `docker login -u 'robot$NAME'`."""


@token.command("create")
@config_option
@flavor_option
@click.option("--name", required=True, help="The robot's name: it logs in as robot$NAME.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="What it may do, e.g. 'repository:team/app:pull,push' (names may be patterns such "
    "as team/*); repeat for more.",
)
@click.option("--expires", help="Lifetime: 90d, 12h, 1w [default: until revoked].")
def token_create(
    config_file: str | None,
    flavor: str | None,
    name: str,
    scopes: tuple[str, ...],
    expires: str | None,
) -> None:
    """Create a robot token and print its secret, once: it is stored hashed only."""
    from pydantic import TypeAdapter, ValidationError

    from portside.auth.robots import InvalidRobot
    from portside.config.durations import Duration
    from portside.server import housekeeping
    from portside.server.robots import NameTaken

    lifetime = None
    if expires is not None:
        try:
            lifetime = TypeAdapter(Duration).validate_python(expires)
        except ValidationError as error:
            raise click.BadParameter(error.errors()[0]["msg"], param_hint="--expires") from None
    settings = _ready(config_file, flavor)
    if settings.auth is None:
        click.echo("warning: the config has no auth section: the registry is open", err=True)
    try:
        created, secret = asyncio.run(housekeeping.create_token(settings, name, scopes, lifetime))
    except (InvalidRobot, NameTaken) as error:
        raise click.ClickException(str(error)) from None
    until = _when(created.expires_at) or "revoked"
    click.echo(f"robot${name}: {created.scopes}, until {until}; its secret:", err=True)
    click.echo(secret)


@token.command("list")
@config_option
@flavor_option
def token_list(config_file: str | None, flavor: str | None) -> None:
    """List the robot tokens, with their scopes, expiry and last use."""
    from rich.console import Console
    from rich.table import Table

    from portside.server import housekeeping

    tokens = asyncio.run(housekeeping.list_tokens(_ready(config_file, flavor)))
    table = Table(title="robot tokens")
    for column in ("login", "scopes", "created", "expires", "last used"):
        table.add_column(column)
    for robot in tokens:
        table.add_row(
            f"robot${robot.name}",
            robot.scopes,
            _when(robot.created_at),
            _when(robot.expires_at) or "never",
            _when(robot.last_used_at) or "never",
        )
    Console(width=200).print(table)


@token.command("revoke")
@config_option
@flavor_option
@click.argument("name")
def token_revoke(config_file: str | None, flavor: str | None, name: str) -> None:
    """Revoke robot token NAME: it stops working on every instance within a second."""
    from portside.server import housekeeping

    name = name.removeprefix("robot$")
    if not asyncio.run(housekeeping.revoke_token(_ready(config_file, flavor), name)):
        raise click.ClickException(f"no robot token named {name!r}")
    click.echo(f"revoked robot${name}")


# The metadata schema ----------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The metadata database's schema: which revision it is at, and the way back to an older
    one before an older Portside is installed again (README: Upgrading)."""


@db.command("current")
@config_option
@flavor_option
def db_current(config_file: str | None, flavor: str | None) -> None:
    """Print the revision the metadata database is at, and this version's newest."""
    from portside.metadata import migrate

    url = _schema_database(_load(config_file, flavor))
    at = _database_call(lambda: migrate.current(url))
    click.echo(f"{at or 'none (never migrated)'}; this version's newest: {_head()}")


@db.command("history")
def db_history() -> None:
    """List the revisions this version knows, oldest first: what each one adds."""
    from portside.metadata import migrate

    for revision in migrate.history():
        click.echo(f"{revision.revision}  {revision.summary}")


@db.command("downgrade")
@config_option
@flavor_option
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_downgrade(config_file: str | None, flavor: str | None, revision: str, yes: bool) -> None:
    """Take the metadata schema back to REVISION (see `portside db history`), the newest an
    older Portside knows, before installing that version again. What the older schema has no
    place for is dropped (robot tokens, the audit log, pull times... as the revisions after
    REVISION list them). Stop every instance first: a server of this version migrates it up
    again at start."""
    from portside.metadata import migrate

    settings = _load(config_file, flavor)
    if _serving(settings.host, settings.port):
        raise click.ClickException(
            f"a portside server is serving on {settings.listen} with this machine's network: "
            "stop it (and every other instance) first"
        )
    url = _schema_database(settings)
    at = _database_call(lambda: migrate.current(url))
    dropped = [r for r in migrate.history() if _between(r.revision, revision, at)]
    if not yes:
        for later in dropped:
            click.echo(f"undo {later.revision}  {later.summary}", err=True)
        click.echo("stop every instance first; this does not see those on other machines", err=True)
        click.confirm(f"Downgrade the metadata schema from {at} to {revision}?", abort=True)
    try:
        _database_call(lambda: migrate.downgrade(url, revision))
    except migrate.UnknownRevision as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"the metadata schema is at {revision}: install the Portside version it belongs to")


def _schema_database(settings: Settings) -> str:
    """The metadata database's URL, made the service's when run as root; refused in one line
    if it names a SQLite file that is not there (rather than made empty)."""
    from portside.server import ownership

    database = ownership.sqlite_file(settings.metadata_url)
    if database is not None and not database.exists():
        raise click.ClickException(f"no metadata database at {database}")
    try:
        ownership.prepare_database(settings)
    except ownership.OwnerUnclear as error:
        raise click.ClickException(str(error)) from None
    return settings.metadata_url


def _between(revision: str, low: str, high: str | None) -> bool:
    """Whether revision is above low and at most high (revisions are numbered in order)."""
    return high is not None and low < revision <= high


def _head() -> str:
    from portside.metadata import migrate

    return migrate.history()[-1].revision


def _serving(host: str, port: int) -> bool:
    """Whether a portside server on this machine holds the listen lock of host:port."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(_listen_lock(host, port))
        except OSError:
            return True
    return False


def _database_call(call: Callable[[], _T]) -> _T:
    """call's result; a database that cannot be reached is one line, not a traceback."""
    from portside.metadata.engine import DatabaseError

    try:
        return call()
    except DatabaseError as error:
        raise click.ClickException(f"cannot reach the metadata database: {error.orig}") from None


# Verify, back up, restore, import ---------------------------------------------------------------


def _open_registry(settings: Settings) -> None:
    """Refuse a registry that is not there; else make its database current, as gc does."""
    from portside.server import ownership

    if settings.storage == "local" and not Path(settings.storage_path).is_dir():
        raise click.ClickException(f"no registry at {settings.storage_path}")
    database = ownership.sqlite_file(settings.metadata_url)
    if database is not None and not database.exists():
        raise click.ClickException(f"no metadata database at {database}")
    try:  # run as root: registry.db and its lock made the service's, not root's
        ownership.prepare_database(settings)
    except ownership.OwnerUnclear as error:
        raise click.ClickException(str(error)) from None
    _migrate(settings.metadata_url)


@main.command()
@config_option
@flavor_option
@click.option(
    "--repair",
    is_flag=True,
    help="Take out what cannot be served: unlink missing and corrupt blobs, delete manifests "
    "whose bytes are, so clients get a 404 and a push stores them anew.",
)
def verify(config_file: str | None, flavor: str | None, repair: bool) -> None:
    """Check every stored blob against its digest and every manifest's references. Safe while
    the registry serves. Exit status 1 if anything was found (repaired or not)."""
    from rich.console import Console

    settings = _load(config_file, flavor)
    _open_registry(settings)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    report = asyncio.run(_verify(settings, repair))
    if report.findings:
        Console().print(_findings_table(report))
    click.echo(report.summary())
    if report.findings:
        sys.exit(1)


async def _verify(settings: Settings, repair: bool) -> Report:
    from portside.metadata.sql import SqlMetadataStore
    from portside.registry.verify import Verifier

    metadata = SqlMetadataStore(settings.metadata_url)
    try:
        with _progress() as bar:
            return await Verifier(_storage(settings), metadata).verify(repair, bar)
    finally:
        await metadata.close()


def _findings_table(report: Report) -> Any:
    from rich.table import Table

    table = Table()
    for column in ("fault", "digest", "detail", "repaired"):
        table.add_column(column)
    for finding in report.findings:
        detail = finding.detail
        if finding.manifest is not None:
            detail = f"{detail}: manifest {finding.manifest} in {finding.repository}"
        table.add_row(str(finding.fault), finding.digest, detail, finding.repaired or "")
    return table


def _sqlite_database(settings: Settings) -> Path:
    from portside.server import ownership

    database = ownership.sqlite_file(settings.metadata_url)
    if database is None:
        raise click.ClickException(
            "backup and restore are for the embedded SQLite database; with PostgreSQL, use "
            "pg_dump and the bucket's versioning (README: Backup and restore)"
        )
    return database


@main.command()
@config_option
@flavor_option
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def backup(config_file: str | None, flavor: str | None, destination: Path) -> None:
    """Back up the registry into DESTINATION, online: the database as one snapshot, then every
    blob it records. Into an earlier backup, only new blobs are copied."""

    from portside.registry.backup import BackupInvalid
    from portside.registry.backup import backup as run_backup

    settings = _load(config_file, flavor)
    database = _sqlite_database(settings)
    _open_registry(settings)
    storage = _storage(settings)
    try:
        with _progress() as bar:
            summary = asyncio.run(run_backup(storage, database, destination, bar))
    except BackupInvalid as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write the backup: {error}") from None
    for finding in summary.lost:
        click.echo(f"left out {finding.digest}: {finding.detail}", err=True)
    click.echo(
        f"backed up {summary.blobs:,} blobs ({summary.bytes:,} bytes) into {destination}: "
        f"{summary.copied:,} copied ({summary.copied_bytes:,} bytes), "
        f"{summary.pruned:,} of an earlier backup removed"
    )


@main.command()
@config_option
@flavor_option
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
def restore(config_file: str | None, flavor: str | None, source: Path) -> None:
    """Restore the backup in SOURCE into the fresh registry the config names (no database yet):
    every blob, checked against its digest, then the database. Exit status 1 if a blob of the
    backup was missing or corrupt (it is left out, as verify --repair would)."""

    from portside.registry.backup import BackupInvalid
    from portside.registry.backup import restore as run_restore

    settings = _load(config_file, flavor)
    database = _sqlite_database(settings)
    storage = _storage(settings)
    try:
        with _progress() as bar:
            summary = asyncio.run(run_restore(source, storage, database, bar))
    except BackupInvalid as error:
        raise click.ClickException(str(error)) from None
    _migrate(settings.metadata_url)
    for finding in summary.lost:
        click.echo(f"left out {finding.digest} ({finding.fault}): {finding.detail}", err=True)
    click.echo(f"restored {summary.blobs:,} blobs ({summary.bytes:,} bytes) from {source}")
    if summary.lost:
        sys.exit(1)


def _storage(settings: Settings) -> Any:
    from portside.server.app import STORAGE_DRIVERS

    return STORAGE_DRIVERS[settings.storage](settings)


@contextlib.contextmanager
def _progress() -> Iterator[_Bar]:
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        yield _Bar(bar)


@main.group("import")
def import_() -> None:
    """Take another registry's storage over."""


@import_.command("distribution")
@config_option
@flavor_option
@click.argument("source")
@click.option("--dry-run", is_flag=True, help="Check the tree and say what would be imported.")
@click.option(
    "--s3-endpoint-url",
    help="With s3://: the S3 server holding the bucket [default: the config's, else AWS S3].",
)
@click.option("--s3-region", help="With s3://: the bucket's region [default: the config's].")
def import_distribution(
    config_file: str | None,
    flavor: str | None,
    source: str,
    dry_run: bool,
    s3_endpoint_url: str | None,
    s3_region: str | None,
) -> None:
    """Import a CNCF distribution registry's storage at SOURCE: a folder (its filesystem
    driver's rootdirectory), or s3://BUCKET/ROOTDIRECTORY (its s3 driver's bucket and
    rootdirectory, reached with the config's s3_* keys). Every repository, tag, manifest and
    blob link; the blobs hard-linked, or copied server-side, where they can be (streamed
    otherwise), each digest checked. Resumable, and safe while Portside serves. Exit status 1
    if anything could not be imported (blobs no repository links are only reported)."""

    from portside.registry.distribution_tree import DistributionTree, NotADistributionTree
    from portside.registry.import_distribution import Issue

    settings = _load(config_file, flavor)
    try:
        tree = DistributionTree(_tree_source(settings, source, s3_endpoint_url, s3_region))
    except NotADistributionTree as error:
        raise click.ClickException(str(error)) from None
    if not dry_run:  # into a registry not made yet, as `serve` would make it
        if settings.storage == "local":
            Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
        _migrate(settings.metadata_url)
        _open_registry(settings)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        report = asyncio.run(_import(settings, tree, dry_run))
    except (BotoCoreError, ClientError) as error:  # a bucket refusing a read or a copy midway
        raise click.ClickException(
            f"S3 refused the import: {error} (run it again to resume)"
        ) from None
    shown = [p for p in report.problems if p.issue is not Issue.ORPHAN]
    how = ", ".join(f"{count:,} {placement}" for placement, count in report.placements.items())
    for problem in shown:
        click.echo(f"{click.style(problem.issue, fg='yellow')}: {problem.where}: {problem.detail}")
    orphans = len(report.of(Issue.ORPHAN))
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {report.repositories:,} repositories, {report.tags:,} tags, "
        f"{report.manifests:,} manifests, {report.blobs:,} blob links; "
        f"{report.taken:,} blobs ({report.taken_bytes:,} bytes) taken over"
        + (f" ({how})" if how else "")
        + (f"; {orphans:,} blobs no repository links left out" if orphans else "")
    )
    if shown:
        sys.exit(1)


def _tree_source(
    settings: Settings, source: str, endpoint: str | None, region: str | None
) -> TreeSource:
    """A folder's tree, or an S3 bucket's (s3://BUCKET/ROOT) on the config's S3 server with its
    keys, else on the server named, with credentials from the AWS environment."""
    from portside.registry.distribution_tree import FolderSource

    if not source.startswith("s3://"):
        return FolderSource(Path(source))
    from botocore.exceptions import BotoCoreError, ClientError

    from portside.registry.distribution_bucket import BucketSource
    from portside.storage.s3_bucket import make_client

    bucket, _, root = source.removeprefix("s3://").partition("/")
    if not bucket:
        raise click.BadParameter("s3://BUCKET/ROOTDIRECTORY needs a bucket", param_hint="SOURCE")
    same = endpoint is None or endpoint == settings.s3_endpoint
    client = make_client(
        endpoint_url=settings.s3_endpoint if same else endpoint,
        region=region or settings.s3_region,
        access_key=settings.s3_access_key if same else None,
        secret_key=settings.s3_secret_key if same else None,
        secure=settings.s3_secure,
        path_style=settings.s3_path_style,
    )
    click.echo(f"listing {source} ...", err=True)  # a big bucket takes a while, before any bar
    try:
        return BucketSource(client, bucket, root)
    except (BotoCoreError, ClientError) as error:
        raise click.ClickException(f"cannot list {source}: {error}") from None


async def _import(settings: Settings, tree: DistributionTree, dry_run: bool) -> ImportReport:
    from portside.metadata.sql import SqlMetadataStore
    from portside.registry.import_distribution import DistributionImport, Target

    if dry_run:
        with _progress() as bar:
            return await DistributionImport(tree, None, bar).run()
    metadata = SqlMetadataStore(settings.metadata_url)
    try:
        with _progress() as bar:
            return await DistributionImport(tree, Target(_storage(settings), metadata), bar).run()
    finally:
        await metadata.close()


def _duration(_context: click.Context, _parameter: click.Parameter, value: str | None) -> Any:
    from pydantic import TypeAdapter, ValidationError

    from portside.config.durations import Duration

    try:
        return None if value is None else TypeAdapter(Duration).validate_python(value)
    except ValidationError as error:
        raise click.BadParameter(error.errors()[0]["msg"]) from None


@main.command()
@config_option
@flavor_option
@click.argument("url")
@click.argument("repositories", nargs=-1, required=True)
@click.option(
    "--tags", "tag_patterns", multiple=True, help="Only tags matching (v1.*); repeatable."
)
@click.option("--versions", help="Only tags that are versions in this range: >=1.2,<2, ~1.4, ^2.")
@click.option("--prefix", default="", help="Put before each repository's name here (mirror/).")
@click.option("--username", help="Log in to the upstream as this user.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the upstream password from standard input [default: $PORTSIDE_SYNC_PASSWORD].",
)
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA bundle for the upstream.")
@click.option("--every", callback=_duration, help="Run again this long after each run: 1h, 30m.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="List what would be copied (tags, manifests, how many blobs and bytes); change nothing.",
)
def sync(
    config_file: str | None,
    flavor: str | None,
    url: str,
    repositories: tuple[str, ...],
    tag_patterns: tuple[str, ...],
    versions: str | None,
    prefix: str,
    username: str | None,
    password_stdin: bool,
    ca_file: str | None,
    every: Any,
    dry_run: bool,
) -> None:
    """Copy REPOSITORIES (names, or patterns such as team/* matched against the catalog) from
    the registry at URL, with the referrers of their manifests (signatures, SBOMs), fetching
    only what is missing. Safe while Portside serves. Exit status 1 if anything could not be
    copied."""
    from portside.registry.tag_filter import InvalidFilter, TagFilter

    try:
        tags = TagFilter.parse(tag_patterns, versions)
    except InvalidFilter as error:
        raise click.BadParameter(str(error)) from None
    if dry_run and every is not None:
        raise click.UsageError("a dry run runs once: give --dry-run or --every")
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    password = password or os.environ.get("PORTSIDE_SYNC_PASSWORD")
    settings = _load(config_file, flavor)
    run = _SyncRun(url, repositories, tags, prefix, username, password, ca_file)
    if dry_run:
        with _registry_as_it_is(settings) as (storage, metadata_url):
            failures = asyncio.run(_sync(run, storage, metadata_url, dry_run=True))
        sys.exit(1 if failures else 0)
    if settings.storage == "local":
        Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
    _migrate(settings.metadata_url)
    _open_registry(settings)
    while True:
        failures = asyncio.run(_sync(run, _storage(settings), settings.metadata_url))
        if every is None:
            break
        time.sleep(every.total_seconds())
    if failures:
        sys.exit(1)


@dataclasses.dataclass(frozen=True)
class _SyncRun:
    """What `portside sync` copies, and from where."""

    url: str
    repositories: tuple[str, ...]
    tags: Any
    prefix: str
    username: str | None
    password: str | None
    ca_file: str | None


@contextlib.contextmanager
def _registry_as_it_is(settings: Settings) -> Iterator[tuple[Any, str]]:
    """For a dry run: the registry's storage and metadata URL to read, left as they are (not
    made, not migrated); where there is no registry yet, an empty one in a temporary folder."""
    from portside.metadata import migrate
    from portside.server import ownership
    from portside.storage.filesystem import FilesystemBlobStore

    database = ownership.sqlite_file(settings.metadata_url)
    absent = database is not None and not database.exists()
    if settings.storage == "local" and not Path(settings.storage_path).is_dir():
        absent = True
    at = None if absent else _database_call(lambda: migrate.current(settings.metadata_url))
    if at is not None:
        if at != _head():
            raise click.ClickException(
                f"the metadata database is at revision {at}, this version's is {_head()}: a "
                "sync without --dry-run (or serve) migrates it"
            )
        yield _storage(settings), settings.metadata_url
        return
    with tempfile.TemporaryDirectory(prefix="portside-dry-run-") as empty:
        url = f"sqlite:///{empty}/registry.db"
        _migrate(url)
        yield FilesystemBlobStore(Path(empty)), url


async def _sync(run: _SyncRun, storage: Any, metadata_url: str, *, dry_run: bool = False) -> int:
    """One run, reported on standard output (a dry run lists what it would copy); how many
    failures."""
    from portside.metadata.sql import SqlMetadataStore
    from portside.registry.sync import Sync
    from portside.upstream import Upstream
    from portside.upstream.errors import UpstreamError

    try:
        upstream = Upstream(
            run.url, username=run.username, password=run.password, ca_file=run.ca_file
        )
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="URL") from None
    metadata = SqlMetadataStore(metadata_url)
    try:
        with _progress() as bar:
            sync = Sync(upstream, storage, metadata, run.prefix, bar, dry_run=dry_run)
            try:
                names = await sync.repositories(run.repositories)
            except UpstreamError as error:
                raise click.ClickException(
                    f"cannot list {run.url}'s repositories: {error}"
                ) from None
            report = await sync.sync(names, run.tags)
    finally:
        await metadata.close()
        await upstream.aclose()
    for failure in report.failures:
        click.echo(f"failed: {failure}", err=True)
    if dry_run:
        for repository, tag, digest in report.tagged:
            click.echo(f"tag {repository}:{tag} {digest}")
        for repository, digest in report.copied:
            click.echo(f"manifest {repository}@{digest}")
    click.echo(
        f"{'would sync' if dry_run else 'synced'} {report.repositories:,} repositories, "
        f"{report.tags:,} tags ({report.unchanged:,} unchanged): "
        f"{'would fetch' if dry_run else 'fetched'} {report.manifests:,} manifests "
        f"({report.referrers:,} of them referrers) and {report.blobs:,} blobs "
        f"({report.bytes:,} bytes)"
    )
    return len(report.failures)
