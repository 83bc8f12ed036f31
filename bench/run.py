"""Benchmark Portside against CNCF distribution on this machine: `python bench/run.py --help`.

Both registries run side by side on loopback, with filesystem storage or (`--backend s3`) on one
S3 bucket, each then with and without redirects of blob GETs to the bucket, or (`--cache`) as
pull-through caches of one upstream; every scenario is measured on every registry in the same
round, rounds are repeated, and the table reports medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from cache import (
    CACHE_PROFILE,
    QUICK_CACHE_PROFILE,
    CacheScenario,
    Upstream,
    build_cache_scenarios,
    upstream_json,
    upstream_table,
)
from receiver import receiving
from registries import (
    FLOOR_REGISTRY_NAMES,
    OBSERVABILITY_REGISTRY_NAMES,
    POLICIES_REGISTRY_NAMES,
    PORTSIDE,
    PORTSIDE_PLAIN,
    PORTSIDE_POLICIES,
    REGISTRY_NAMES,
    S3_REGISTRY_NAMES,
    UPSTREAM,
    Registry,
    RegistryStartError,
    running,
    write_htpasswd,
)
from report import Row, markdown_table, text_table, write_json
from scenarios import (
    DEFAULT_PROFILE,
    QUICK_PROFILE,
    S3_PROFILE,
    Profile,
    Scenario,
    build_scenarios,
)
from services import ServiceError, Services, s3_services
from tools import BenchError

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parent.parent
DEFAULT_ROUNDS = 3
# The cache scenarios are short and noisier (cold fetches, 20 clients on two cores): more rounds.
CACHE_ROUNDS = 5


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [scenario.name for scenario in build_scenarios(DEFAULT_PROFILE)]
    cache_names = [scenario.name for scenario in build_cache_scenarios(CACHE_PROFILE, Upstream())]
    parser = argparse.ArgumentParser(
        description="Benchmark Portside against CNCF distribution (docker-registry) on loopback."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"measurements per scenario and registry; the table shows the median "
        f"(default {DEFAULT_ROUNDS}, with --cache {CACHE_ROUNDS})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small blobs and images, 2 s load tests"
    )
    parser.add_argument(
        "--only",
        type=comma_list,
        metavar="SCENARIO,...",
        help="run only these scenarios: "
        + ", ".join(names)
        + "; with --cache: "
        + ", ".join(cache_names),
    )
    parser.add_argument(
        "--backend",
        choices=["filesystem", "s3"],
        default="filesystem",
        help="where the registries keep blobs: local folders (default), or one S3 bucket, with "
        "Portside's metadata in PostgreSQL; s3 runs each registry with redirects off and on, "
        "and starts an S3 server and a PostgreSQL cluster unless S3_ENDPOINT_URL and "
        "PORTSIDE_TEST_POSTGRES_URL name them",
    )
    parser.add_argument(
        "--registries",
        type=comma_list,
        metavar="NAME,...",
        help="registries to start (default: portside,distribution; with --backend s3 also "
        "portside-redirect,distribution-redirect)",
    )
    parser.add_argument(
        "--auth",
        choices=["none", "htpasswd"],
        default="none",
        help="htpasswd: both registries behind Basic auth from one bcrypt htpasswd file (cost "
        "5, as htpasswd -B writes) and every request logged in; runs the manifest "
        "scenarios unless --only says more",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="the pull-through cache scenarios instead: Portside (mirroring, the upstream at "
        "up/) and distribution (proxy mode) caching one more distribution, the upstream, "
        "whose access log counts their fetches",
    )
    parser.add_argument(
        "--observability-ab",
        action="store_true",
        help="what metrics, the audit log and notifications cost: Portside with all three on "
        "(metrics as by default, audit on, every event sent to an nginx answering 204) and "
        "with all three off, side by side in the same rounds, with their ratio (distribution "
        "too if --registries names it)",
    )
    parser.add_argument(
        "--policies-ab",
        action="store_true",
        help="what quotas and immutable tags cost: Portside with a quota on every namespace and "
        "every pushed tag immutable, and Portside without policies, side by side in the same "
        "rounds, with their ratio: small-image-push, and the same per second of the server's "
        "own CPU time (small-image-push-cpu), unless --only says otherwise",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="add the floor: granian serving bench/floor.py, an app that does only what any "
        "registry must with an image (hash, write, sync, pathsend), beside Portside and "
        "distribution, with its own ratio to distribution, about the most a registry served by "
        "granian could reach; the blob scenarios unless --only says otherwise",
    )
    parser.add_argument(
        "--floor-workers",
        type=int,
        default=1,
        metavar="N",
        help="the floor's worker processes (default 1: an upload's hash stays in one worker's "
        "memory; 2, as Portside has here, for small-image-push and the skopeo rows)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the table as README-ready markdown"
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = CACHE_ROUNDS if args.cache else DEFAULT_ROUNDS
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.cache:
        names = cache_names
        if args.backend != "filesystem" or args.auth != "none":
            parser.error("--cache runs on the filesystem backend, without auth")
    if unknown := set(args.only or ()) - set(names):
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    if args.auth == "htpasswd":
        if args.backend != "filesystem":
            parser.error("--auth htpasswd runs on the filesystem backend")
        args.only = args.only or ["manifest-head", "manifest-get"]
    args.columns = S3_REGISTRY_NAMES if args.backend == "s3" else REGISTRY_NAMES
    if args.observability_ab:
        if args.backend != "filesystem" or args.cache:
            parser.error("--observability-ab runs on the filesystem backend, without --cache")
        args.columns = OBSERVABILITY_REGISTRY_NAMES
        args.registries = args.registries or [PORTSIDE, PORTSIDE_PLAIN]
    if args.policies_ab:
        if args.backend != "filesystem" or args.cache or args.observability_ab:
            parser.error("--policies-ab runs on the filesystem backend, on its own")
        args.columns = POLICIES_REGISTRY_NAMES
        args.registries = args.registries or [PORTSIDE_POLICIES, PORTSIDE]
        args.only = args.only or ["small-image-push", "small-image-push-cpu"]
    if args.floor:
        if args.backend != "filesystem" or args.cache or args.observability_ab or args.policies_ab:
            parser.error("--floor runs on the filesystem backend, on its own")
        if args.auth != "none":
            parser.error("--floor runs without auth")
        if args.floor_workers < 1:
            parser.error("--floor-workers must be at least 1")
        args.columns = FLOOR_REGISTRY_NAMES
        args.only = args.only or [name for name in names if name.startswith("blob-")]
    if args.only is None and not args.cache:  # by CPU time: for A/B runs, when asked for
        args.only = [name for name in names if name != "small-image-push-cpu"]
    if args.registries is None:
        args.registries = list(args.columns)
    if not args.registries or not set(args.registries) <= set(args.columns):
        parser.error(f"--registries takes a subset of {', '.join(args.columns)}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_rounds(
    scenarios: list[Scenario],
    registries: dict[str, Registry],
    rows: dict[str, Row],
    rounds: int,
    scratch: Path,
    results_prefix: str = "",
) -> None:
    names = list(registries)
    prepared: set[tuple[str, str]] = set()
    for round_index in range(rounds):
        # Alternate who goes first, so neither registry always runs right after the other's
        # writes (page cache, writeback, CPU frequency).
        order = names if round_index % 2 == 0 else names[::-1]
        for scenario in scenarios:
            for name in order:
                registry = registries[name]
                cell = rows[scenario.name].cells[name]
                if cell.errors:
                    continue  # failed in an earlier round: report that, do not wait on it again
                try:
                    if registry.exited():
                        code = registry.process.returncode
                        log_file = RESULTS_DIR / f"{results_prefix}{name}.log"
                        raise BenchError(f"{name} exited with code {code}, see {log_file}")
                    if (scenario.name, name) not in prepared:
                        scenario.prepare(registry, scratch)
                        prepared.add((scenario.name, name))
                    measurement = scenario.measure(registry, round_index, scratch)
                except Exception as error:
                    # Whatever went wrong, it is this registry's cell that failed, not the run.
                    message = str(error) if isinstance(error, BenchError) else repr(error)
                    cell.errors.append(f"round {round_index + 1}: {message}")
                    log(f"[{round_index + 1}/{rounds}] {scenario.name} {name}: ERROR {message}")
                    continue
                cell.samples.append(measurement.value)
                if measurement.note:
                    cell.notes.append(f"round {round_index + 1}: {measurement.note}")
                log(
                    f"[{round_index + 1}/{rounds}] {scenario.name:<22} {name:<21} "
                    f"{measurement.value:10.1f} {scenario.unit}"
                    + (f"  ({measurement.note})" if measurement.note else "")
                )


def save_server_logs(registries: dict[str, Registry], results_prefix: str = "") -> None:
    """Keep the end of each server log: the temp dir holding the full one is about to go."""
    for name, registry in registries.items():
        (RESULTS_DIR / f"{results_prefix}{name}.log").write_text(registry.log_tail(500) + "\n")


def checkout_commit() -> str:
    """The commit measured, so a saved result can be traced back to its code."""
    done = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile: Profile = (
        QUICK_PROFILE if args.quick else S3_PROFILE if args.backend == "s3" else DEFAULT_PROFILE
    )
    upstream = Upstream()
    cache_profile = QUICK_CACHE_PROFILE if args.quick else CACHE_PROFILE
    candidates: list[Scenario] = (
        list(build_cache_scenarios(cache_profile, upstream))
        if args.cache
        else build_scenarios(profile)
    )
    scenarios = [
        scenario for scenario in candidates if args.only is None or scenario.name in args.only
    ]
    rows = {
        scenario.name: Row(scenario.name, scenario.title, scenario.unit, args.columns)
        for scenario in scenarios
    }
    # SIGTERM takes the Ctrl-C path, so the registries are stopped and the temp dir removed.
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    RESULTS_DIR.mkdir(exist_ok=True)
    # Files of their own, so that an S3 run keeps a filesystem run's results, and back.
    results_prefix = (
        "s3-"
        if args.backend == "s3"
        else "cache-"
        if args.cache
        else "observability-"
        if args.observability_ab
        else "policies-"
        if args.policies_ab
        else "floor-"
        if args.floor
        else ""
    )
    started = time.monotonic()
    interrupted = False
    registries: dict[str, Registry] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="portside-bench-")))
        scratch = workdir / "scratch"
        scratch.mkdir()
        try:
            services: Services | None = None
            if args.backend == "s3":
                # Entered first, so stopped last: after every registry that uses them.
                try:
                    services = stack.enter_context(s3_services(workdir))
                except ServiceError as error:
                    log(f"--backend s3 needs an S3 server and PostgreSQL: {error}")
                    return 1
            htpasswd = workdir / "htpasswd" if args.auth == "htpasswd" else None
            authorization = write_htpasswd(htpasswd) if htpasswd else None
            if args.cache:
                # Entered before the caches, so stopped after them.
                try:
                    upstream.registry = stack.enter_context(running(UPSTREAM, workdir / UPSTREAM))
                except RegistryStartError as error:
                    log(f"the upstream registry did not start:\n{error}")
                    return 1
                log(f"upstream: {upstream.registry.version} at {upstream.registry.url}")
            cache_of = upstream.registry.url if upstream.registry else None
            events_to = None
            if args.observability_ab:
                events_to = stack.enter_context(receiving(workdir / "receiver"))
            for name in args.registries:
                try:
                    registries[name] = stack.enter_context(
                        running(
                            name,
                            workdir / name,
                            services,
                            htpasswd,
                            authorization,
                            cache_of,
                            events_to if name == PORTSIDE else None,
                            args.floor_workers,
                        )
                    )
                except RegistryStartError as error:
                    log(f"{name} did not start, its column will read 'error':\n{error}")
                    for row in rows.values():
                        row.cells[name].errors.append(f"did not start: {error}")
            for registry in registries.values():
                log(f"{registry.name}: {registry.version} at {registry.url}")
            measure_rounds(scenarios, registries, rows, args.rounds, scratch, results_prefix)
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted: stopping the registries and reporting what was measured")
        finally:
            # A second Ctrl-C must not cut the teardown short and leave a registry running.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            save_server_logs(registries, results_prefix)
            if upstream.registry is not None:
                save_server_logs({UPSTREAM: upstream.registry}, results_prefix)
    table = markdown_table if args.markdown else text_table
    print(
        f"Median of {args.rounds} round(s){' (interrupted, partial)' if interrupted else ''}; "
        "ratio = Portside / distribution, every unit is higher-is-better: above 1 Portside is "
        "faster.\n"
    )
    print(table(list(rows.values())))
    cache_scenarios = [scenario for scenario in scenarios if isinstance(scenario, CacheScenario)]
    if cache_scenarios:
        print("\n" + upstream_table(cache_scenarios, args.markdown))
    run_info: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "quick": args.quick,
        "backend": args.backend,
        "interrupted": interrupted,
        "seconds": round(time.monotonic() - started),
        "commit": checkout_commit(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "registries": {name: registry.version for name, registry in registries.items()},
        "profile": dataclasses.asdict(cache_profile if args.cache else profile),
    }
    if cache_scenarios:
        run_info["upstream_requests"] = upstream_json(cache_scenarios)
        run_info["load_average"] = os.getloadavg()
    write_json(RESULTS_DIR / f"{results_prefix}latest.json", list(rows.values()), run_info)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
