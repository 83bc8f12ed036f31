"""Start and stop the registries under test, each on a free loopback port with fresh storage.

`--backend filesystem` runs Portside and distribution on local folders. `--backend s3` runs both
on the same S3 bucket (distribution's S3 driver; Portside's with PostgreSQL metadata), each
twice: sending blob bytes itself, and redirecting blob GETs to presigned URLs of the bucket.
`--floor` runs bench/floor.py beside them: granian with an app that does only what any registry
must with an image. `--cache` runs both as pull-through caches of one more distribution, the
upstream, whose access log counts what each cache fetched.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from services import Services

PORTSIDE = "portside"
DISTRIBUTION = "distribution"
PORTSIDE_REDIRECT = "portside-redirect"
# With --observability-ab: Portside with metrics, audit and notifications off, beside Portside
# with all three on (metrics by default; audit on; every event sent to a receiver).
PORTSIDE_PLAIN = "portside-plain"
DISTRIBUTION_REDIRECT = "distribution-redirect"
# With --floor: bench/floor.py on granian, the least any registry served by granian does.
FLOOR = "floor"
FLOOR_REGISTRY_NAMES = (PORTSIDE, FLOOR, DISTRIBUTION)
# With --cache: the registry both caches pull from, a plain distribution with its access log on.
UPSTREAM = "upstream"
DISTRIBUTION_NAMES = (DISTRIBUTION, DISTRIBUTION_REDIRECT, UPSTREAM)
# The namespace prefix at which Portside mounts the upstream in its `mirroring` section.
CACHE_PREFIX = "up"
REGISTRY_NAMES = (PORTSIDE, DISTRIBUTION)
# With --backend s3: each registry with redirects off, then on.
S3_REGISTRY_NAMES = (PORTSIDE, DISTRIBUTION, PORTSIDE_REDIRECT, DISTRIBUTION_REDIRECT)
OBSERVABILITY_REGISTRY_NAMES = (PORTSIDE, PORTSIDE_PLAIN, DISTRIBUTION)
# With --policies-ab: Portside with quotas and immutable tags on every push, beside Portside
# without policies (PORTSIDE).
PORTSIDE_POLICIES = "portside-policies"
POLICIES_REGISTRY_NAMES = (PORTSIDE_POLICIES, PORTSIDE, DISTRIBUTION)
# Every push checked against a quota that never refuses, and each tag (t0, t1...) immutable:
# the most a push pays for the policies.
BENCH_POLICIES = {
    "quotas": [
        {
            "namespaces": ["*"],
            "max_bytes": "1TiB",
            "max_repositories": 1_000_000,
            "max_tags": 100_000_000,
        }
    ],
    "immutable_tags": [
        {"repositories": ["*"], "tags": ["t*"]},
        {"repositories": ["release/*"], "tag_regex": r"v?\d+\.\d+\.\d+"},
    ],
}

BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password"

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class RegistryStartError(RuntimeError):
    """The registry could not be started or never answered `GET /v2/`."""


@dataclass(frozen=True)
class Registry:
    name: str
    url: str
    version: str
    process: subprocess.Popen[bytes]
    log_path: Path
    # The Authorization header every request sends, when the registry runs with htpasswd auth.
    authorization: str | None = None
    # As a pull-through cache: the prefix of the upstream's names here ("up/" for Portside's
    # mount, "" for distribution's proxy mode, which serves the upstream's names as they are).
    cache_prefix: str = ""

    @property
    def host(self) -> str:
        """HOST:PORT, as skopeo's `docker://` references want it."""
        return self.url.removeprefix("http://")

    def exited(self) -> bool:
        return self.process.poll() is not None

    def cpu_seconds(self) -> float:
        """CPU time (user and system) of the registry's session so far: the server and its
        workers, and the children they reaped. Noise from other load on the machine barely
        touches it, where it swings throughput by a third."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:  # gone meanwhile
                continue
            # After the command: state, ppid, pgrp, session (3), ... utime (11), stime,
            # cutime, cstime (14).
            if int(fields[3]) == self.process.pid:
                ticks += sum(int(value) for value in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


def free_port() -> int:
    # The port is released before the registry binds it; on a quiet loopback that race is harmless.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def portside_executable() -> str:
    """The `portside` script of the venv running this harness, else the one on PATH."""
    beside = Path(sys.executable).with_name("portside")
    if beside.is_file():
        return str(beside)
    found = shutil.which("portside")
    if found is None:
        raise RegistryStartError(
            f"no `portside` executable next to {sys.executable} or on PATH "
            "(pip install -e . into the venv that runs the benchmark)"
        )
    return found


def version_of(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else "unknown"


def distribution_command(
    workdir: Path,
    port: int,
    services: Services | None = None,
    name: str = DISTRIBUTION,
    htpasswd: Path | None = None,
    cache_of: str | None = None,
    events_to: str | None = None,
) -> list[str]:
    config = workdir / "config.yml"
    if services is None:
        # JSON-style flow mappings are valid YAML, so no YAML library is needed to write them.
        auth = f'auth: {{htpasswd: {{realm: bench, path: "{htpasswd}"}}}}\n' if htpasswd else ""
        # Proxy mode: the upstream's names served as they are, fetched when first pulled.
        proxy = f'proxy: {{remoteurl: "{cache_of}"}}\n' if cache_of else ""
        # The upstream logs every request (to stdout, so to server.log), which the cache
        # scenarios count; access logs cost time, so the registries measured keep theirs off.
        access = "" if name == UPSTREAM else ", accesslog: {disabled: true}"
        config.write_text(
            "version: 0.1\n"
            f"log: {{level: error{access}}}\n"
            f'storage: {{filesystem: {{rootdirectory: "{workdir / "storage"}"}}, '
            "delete: {enabled: true}}\n"
            f"http: {{addr: 127.0.0.1:{port}}}\n" + auth + proxy
        )
        return ["docker-registry", "serve", str(config)]
    # distribution 2.8's S3 driver: path-style requests whenever regionendpoint is set (it has
    # no forcepathstyle key); redirects are on unless disabled, for GET and HEAD of blobs alike.
    storage = {
        "s3": {
            "region": services.region,
            "regionendpoint": services.s3_endpoint,
            "bucket": services.bucket,
            "accesskey": services.access_key,
            "secretkey": services.secret_key,
            "secure": services.s3_endpoint.startswith("https:"),
            "v4auth": True,
            "rootdirectory": f"/{services.prefix(name)}",
        },
        "delete": {"enabled": True},
        "redirect": {"disable": name != DISTRIBUTION_REDIRECT},
    }
    settings = {
        "version": "0.1",
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": storage,
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    config.write_text(json.dumps(settings, indent=2) + "\n")  # JSON is YAML
    return ["docker-registry", "serve", str(config)]


def floor_command(port: int, workers: int) -> list[str]:
    """granian serving bench/floor.py; its storage is FLOOR_STORAGE (environment())."""
    granian = Path(sys.executable).with_name("granian")
    return [
        str(granian) if granian.is_file() else "granian",
        "--interface",
        "asgi",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--working-dir",
        str(Path(__file__).resolve().parent),
        "floor:app",
    ]


def portside_command(
    workdir: Path,
    port: int,
    services: Services | None = None,
    name: str = PORTSIDE,
    htpasswd: Path | None = None,
    cache_of: str | None = None,
    events_to: str | None = None,
) -> list[str]:
    config = workdir / "config.yml"
    if services is None:
        settings: dict[str, object] = {
            "storage_path": str(workdir / "storage"),
            "loglevel": "warning",
        }
        if cache_of is not None:
            # The upstream mounted at up/: up/bench/x is the upstream's bench/x, a cache only.
            settings["mirroring"] = {"upstreams": {CACHE_PREFIX: {"url": cache_of}}}
        if name == PORTSIDE_PLAIN:
            settings["metrics"] = {"enabled": False}
        if name == PORTSIDE_POLICIES:
            settings["policies"] = BENCH_POLICIES
        if events_to is not None:
            settings["audit"] = {"enabled": True}
            settings["notifications"] = {"endpoints": [{"name": "bench", "url": events_to}]}
        if htpasswd is not None:
            settings["auth"] = {
                "htpasswd": {"path": str(htpasswd)},
                "access": {
                    "rules": [{"repositories": ["*"], "users": [BENCH_USER], "actions": ["*"]}]
                },
            }
        config.write_text(json.dumps({"bench": settings}, indent=2) + "\n")  # JSON is YAML
    else:
        settings = {
            "storage": "s3",
            "storage_path": services.prefix(name),
            "storage_redirect": name == PORTSIDE_REDIRECT,
            "s3_bucket": services.bucket,
            "s3_endpoint_url": services.s3_endpoint,
            "s3_region": services.region,
            "s3_access_key": services.access_key,
            "s3_secret_key": services.secret_key,
            "database_url": services.database_url(name),
            "loglevel": "warning",
        }
        config.write_text(json.dumps({"bench": settings}, indent=2) + "\n")
    return [
        portside_executable(),
        "serve",
        "--config",
        str(config),
        "--flavor",
        "bench",
        "--listen",
        f"127.0.0.1:{port}",
    ]


def wait_until_ready(registry: Registry) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if registry.exited():
            raise RegistryStartError(
                f"{registry.name} exited with code {registry.process.returncode} at start:\n"
                f"{registry.log_tail()}"
            )
        try:
            # Any answer below 500 means the HTTP stack is up; a scenario that then fails says why.
            if httpx.get(f"{registry.url}/v2/", timeout=2.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RegistryStartError(
        f"{registry.name} did not answer GET /v2/ within {READY_TIMEOUT_S:.0f}s:\n"
        f"{registry.log_tail()}"
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the registry and everything it forked (Portside's worker processes)."""
    # start_new_session made the registry a process group leader: signal the whole group, which
    # also reaches workers that outlived a crashed leader.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def environment(name: str, storage: Path) -> dict[str, str]:
    """The harness's environment, but for distribution without AWS_CA_BUNDLE: the AWS SDK of
    distribution 2.8 panics at start when it is set ("unable to load custom CA bundle,
    HTTPClient's transport unsupported type"); for the floor, with its storage."""
    if name in DISTRIBUTION_NAMES:
        return {key: value for key, value in os.environ.items() if key != "AWS_CA_BUNDLE"}
    if name == FLOOR:
        return {**os.environ, "FLOOR_STORAGE": str(storage)}
    return dict(os.environ)


def write_htpasswd(path: Path) -> str:
    """An htpasswd file with one bcrypt user, as `htpasswd -B` writes it (cost 5); the
    Authorization header that logs in as that user."""
    from portside.auth.htpasswd import add_user

    add_user(path, BENCH_USER, BENCH_PASSWORD, rounds=5)
    token = base64.b64encode(f"{BENCH_USER}:{BENCH_PASSWORD}".encode()).decode()
    return f"Basic {token}"


@contextmanager
def running(
    name: str,
    workdir: Path,
    services: Services | None = None,
    htpasswd: Path | None = None,
    authorization: str | None = None,
    cache_of: str | None = None,
    events_to: str | None = None,
    floor_workers: int = 1,
) -> Iterator[Registry]:
    """Run registry `name` with its storage under `workdir`, or in the S3 bucket and PostgreSQL
    database of services, until the block exits; with htpasswd, behind Basic auth; with
    cache_of, as a pull-through cache of the registry at that URL; with events_to, Portside
    with its audit log on, sending every notification event to that URL."""
    workdir.mkdir(parents=True)
    (workdir / "storage").mkdir()
    port = free_port()
    cache_prefix = ""
    try:
        if name in DISTRIBUTION_NAMES:
            command = distribution_command(workdir, port, services, name, htpasswd, cache_of)
            version = version_of(["docker-registry", "--version"])
        elif name == FLOOR:
            command = floor_command(port, floor_workers)
            version = version_of([command[0], "--version"])
        else:
            command = portside_command(workdir, port, services, name, htpasswd, cache_of, events_to)
            version = version_of([command[0], "--version"])
            cache_prefix = f"{CACHE_PREFIX}/" if cache_of else ""
    except RegistryStartError:
        raise
    except Exception as error:  # a schema that could not be created, say
        raise RegistryStartError(f"cannot configure {name}: {error!r}") from error
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        try:
            # A session of its own keeps the terminal's Ctrl-C away from the registry, so it is
            # stopped by stop() after the harness has finished reporting, not mid-request.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment(name, workdir / "storage"),
            )
        except OSError as error:
            raise RegistryStartError(f"cannot run {command[0]}: {error}") from error
    url = f"http://127.0.0.1:{port}"
    registry = Registry(name, url, version, process, log_path, authorization, cache_prefix)
    try:
        wait_until_ready(registry)
        yield registry
    finally:
        stop(process)
