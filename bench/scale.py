"""How cost grows with the registry's size: listing pages and a garbage collection at 1k, 10k and
100k repositories and tags (about 1M blobs at the largest size).

Each size gets a fresh registry, filled straight through the metadata store's tables in batches
(one transaction per batch): pushing a million blobs over HTTP would take hours. The rows are
the ones real pushes write: before filling, `check_fill` pushes a sample of the layout through
the store's request API (reserve_blob, link_blob, put_manifest) into one database and bulk-fills
the same sample into another, and refuses to go on unless both hold the same rows. Then it
starts `portside serve` on the filled store and times pages over HTTP, stops it, and runs
`portside gc` as a child process, timing it and reading its peak RSS.

    .venv/bin/python bench/scale.py                      # SQLite: 1k, 10k, 100k
    .venv/bin/python bench/scale.py --quick              # 200 and 2,000: a smoke run
    .venv/bin/python bench/scale.py --backend postgres   # PORTSIDE_TEST_POSTGRES_URL, or a
                                                         # cluster of its own
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
from registries import free_port, portside_executable, stop
from services import log, postgres_server
from sqlalchemy import Connection, Engine, create_engine, insert, make_url, select, text

from portside.metadata.base import Manifest, Reference, ReferenceKind
from portside.metadata.migrate import upgrade
from portside.metadata.sql import SqlMetadataStore
from portside.metadata.tables import (
    blobs,
    manifest_references,
    manifests,
    metadata,
    repositories,
    repository_blobs,
    tags,
)

SIZES: Final = (1_000, 10_000, 100_000)
QUICK_SIZES: Final = (200, 2_000)
LAYERS: Final = 6  # unique layers of each repository's image, besides a shared base layer
BASE_LAYERS: Final = 100  # base layers the images share (a few distros' worth)
OLD_EVERY: Final = 10  # every 10th repository also holds an older, untagged image: garbage
SIGNED_EVERY: Final = 10  # every 10th manifest of the many-tags repository has a signature
REFERRERS: Final = 20  # referrers of the subject whose list is timed
DESCRIBED_EVERY: Final = 10  # every 10th image has a description (search matches those too)
BATCH: Final = 5_000  # rows per insert, and images per transaction
AGE: Final = timedelta(hours=2)  # older than gc's default grace period: garbage is collectable
# Between two images' pushes: rows a push writes share its time, pushes do not
PUSH_INTERVAL: Final = timedelta(milliseconds=1)
SAMPLES: Final = 15
MANY_TAGS: Final = "scale/many-tags"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
SIGNATURE: Final = "application/vnd.example.signature"
RESULTS: Final = Path(__file__).parent / "results" / "scale-latest.json"


def digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


# The layout: what real pushes would have left, as images.


@dataclass(frozen=True)
class Image:
    repository: str
    manifest: Manifest
    blobs: dict[str, int]  # config and layers: digest → size
    tag: str | None


@dataclass
class Layout:
    images: list[Image] = field(default_factory=list)
    # A blob pushed to a repository that no manifest references: a push that died before its
    # manifest (garbage once unreferenced for the grace period).
    strays: list[tuple[str, str, int]] = field(default_factory=list)


def image(
    repository: str,
    key: object,
    layers: dict[str, int],
    tag: str | None,
    subject: str | None = None,
    description: str | None = None,
) -> Image:
    config = {digest("config", repository, key): 1_500}
    annotations = None
    if description is not None:
        annotations = json.dumps({"org.opencontainers.image.description": description})
    manifest = Manifest(
        repository=repository,
        digest=digest("manifest", repository, key),
        media_type=OCI_MANIFEST,
        size=900,
        artifact_type=SIGNATURE if subject else None,
        subject=subject,
        annotations=annotations,
        description=description,
    )
    return Image(repository, manifest, config | layers, tag)


def layout(size: int, first: int = 0) -> Iterator[Layout]:
    """The registry of a size, in chunks of up to BATCH images: `size` repositories of one
    tagged image each (every OLD_EVERY-th with an older untagged one, every one with a stray
    blob), and MANY_TAGS with `size` tags, each on a manifest of its own, every SIGNED_EVERY-th
    signed, the first with REFERRERS referrers."""
    chunk = Layout()
    for i in range(first, size):
        name = f"scale/r{i:06d}"
        base = {digest("base", i % BASE_LAYERS): 30_000_000}
        layers = {digest("layer", name, n): 5_000_000 for n in range(LAYERS)}
        described = f"service {i} of the scale test" if i % DESCRIBED_EVERY == 0 else None
        chunk.images.append(image(name, "latest", base | layers, "latest", None, described))
        if i % OLD_EVERY == 0:
            old_layer = {digest("layer", name, "old"): 5_000_000}
            chunk.images.append(image(name, "old", base | old_layer, None))
        chunk.strays.append((name, digest("stray", name), 1_000_000))
        chunk.images += many_tags(i)
        if len(chunk.images) >= BATCH:
            yield chunk
            chunk = Layout()
    yield chunk


def many_tags(i: int) -> list[Image]:
    """MANY_TAGS's image i: one shared layer, tag v<i>; and its signatures."""
    layer = {digest("layer", MANY_TAGS): 20_000_000}
    tagged = image(MANY_TAGS, i, layer, f"v{i:06d}")
    signatures = REFERRERS if i == 0 else 1 if i % SIGNED_EVERY == 0 else 0
    subject = tagged.manifest.digest
    return [tagged] + [
        image(MANY_TAGS, f"sig-{i}-{n}", {}, None, subject) for n in range(signatures)
    ]


# Filling: the bulk rows, and the same through the store's API for the check.


def references(img: Image) -> list[Reference]:
    return [Reference(d, ReferenceKind.BLOB) for d in img.blobs]


class Rows:
    """The rows of a chunk of the layout, for a database whose repository ids are `ids`."""

    def __init__(self, ids: dict[str, int], stamp: datetime) -> None:
        self.ids, self.stamp = ids, stamp
        self.blobs: dict[str, dict[str, Any]] = {}
        self.links: dict[tuple[int, str], dict[str, Any]] = {}
        self.manifests: list[dict[str, Any]] = []
        self.references: list[dict[str, Any]] = []
        self.tags: list[dict[str, Any]] = []

    def blob(self, repository: str, blob: str, size: int) -> None:
        # Upserts in the real store: a blob is stored once, linked once per repository.
        self.blobs.setdefault(
            blob, {"digest": blob, "size": size, "created_at": self.stamp, "state": "stored"}
        )
        key = (self.ids[repository], blob)
        self.links.setdefault(
            key, {"repository_id": key[0], "digest": blob, "created_at": self.stamp}
        )

    def add(self, chunk: Layout) -> None:
        for repository, blob, size in chunk.strays:
            self.blob(repository, blob, size)
        for img in chunk.images:
            self.stamp += PUSH_INTERVAL
            for blob, size in img.blobs.items():
                self.blob(img.repository, blob, size)
            m, repository_id = img.manifest, self.ids[img.repository]
            self.blob(img.repository, m.digest, m.size)
            self.manifests.append(
                {"repository_id": repository_id, "created_at": self.stamp}
                | {column: getattr(m, column) for column in MANIFEST_FIELDS}
            )
            self.references += [
                {
                    "repository_id": repository_id,
                    "manifest_digest": m.digest,
                    "digest": r.digest,
                    "kind": r.kind.value,
                }
                for r in references(img)
            ]
            if img.tag is not None:
                self.tags.append(
                    {
                        "repository_id": repository_id,
                        "name": img.tag,
                        "digest": m.digest,
                        "updated_at": self.stamp,
                    }
                )


MANIFEST_FIELDS: Final = (
    "digest",
    "media_type",
    "size",
    "artifact_type",
    "subject",
    "annotations",
    "description",
)


def batched(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), BATCH):
        yield rows[start : start + BATCH]


def repository_ids(conn: Connection, names: list[str]) -> dict[str, int]:
    query = select(repositories.c.name, repositories.c.id).where(repositories.c.name.in_(names))
    return dict(conn.execute(query).all())


def bulk_fill(engine: Engine, chunks: Iterable[Layout], stamp: datetime) -> int:
    """Insert the rows of every chunk, one transaction per chunk; how many rows."""
    count = 0
    blobs_seen: set[str] = set()  # shared base layers recur across chunks
    links_seen: set[tuple[int, str]] = set()  # MANY_TAGS's layer is linked once
    for chunk in chunks:
        with engine.begin() as conn:
            # In the order api_fill creates them, so that check_fill's ids agree.
            names = list(
                dict.fromkeys([s[0] for s in chunk.strays] + [i.repository for i in chunk.images])
            )
            known = repository_ids(conn, names)
            new = [{"name": n, "created_at": stamp} for n in names if n not in known]
            if new:
                conn.execute(insert(repositories), new)
                known = repository_ids(conn, names)
            rows = Rows(known, stamp)
            rows.add(chunk)
            stamp = rows.stamp
            fresh_blobs = [r for d, r in rows.blobs.items() if d not in blobs_seen]
            fresh_links = [r for k, r in rows.links.items() if k not in links_seen]
            blobs_seen |= rows.blobs.keys()
            links_seen |= rows.links.keys()
            for table, table_rows in (
                (blobs, fresh_blobs),
                (repository_blobs, fresh_links),
                (manifests, rows.manifests),
                (manifest_references, rows.references),
                (tags, rows.tags),
            ):
                for part in batched(table_rows):
                    conn.execute(insert(table), part)
                count += len(table_rows)
            count += len(new)
    return count


async def api_fill(store: SqlMetadataStore, chunk: Layout) -> None:
    """The chunk pushed as clients push: each blob reserved, then linked; then the manifest."""

    async def push_blob(repository: str, blob: str, size: int) -> None:
        token = uuid.uuid4().hex
        await store.reserve_blob(blob, size, token)
        await store.link_blob(repository, blob, size, token)

    for repository, blob, size in chunk.strays:
        await push_blob(repository, blob, size)
    for img in chunk.images:
        for blob, size in img.blobs.items():
            await push_blob(img.repository, blob, size)
        token = uuid.uuid4().hex
        await store.reserve_blob(img.manifest.digest, img.manifest.size, token)
        await store.put_manifest(img.manifest, references(img), img.tag, token)


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, without the times (a push stamps its own)."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if not c.name.endswith("_at")]
            found[table.name] = sorted(conn.execute(select(*columns)).all(), key=repr)
    return found


def check_fill(workdir: Path) -> None:
    """Refuse to bench rows that differ from those real pushes write: fill a sample both ways
    (in layout order, so repository ids agree) and compare the tables."""
    sample = list(layout(2 * SIGNED_EVERY))
    api_url, bulk_url = (f"sqlite:///{workdir / name}.db" for name in ("api", "bulk"))
    for url in (api_url, bulk_url):
        upgrade(url)
    store = SqlMetadataStore(api_url)

    async def push() -> None:
        try:
            for chunk in sample:
                await api_fill(store, chunk)
        finally:
            await store.close()

    asyncio.run(push())
    engine = create_engine(bulk_url)
    try:
        bulk_fill(engine, sample, datetime.now(UTC))
        bulk = dump(engine)
    finally:
        engine.dispose()
    engine = create_engine(api_url)
    try:
        pushed = dump(engine)
    finally:
        engine.dispose()
    for table, rows in pushed.items():
        if rows != bulk[table]:
            raise SystemExit(
                f"bulk fill differs from pushes in {table}: {rows[:3]} vs {bulk[table][:3]}"
            )


def touch_blob_files(storage: Path, engine: Engine) -> int:
    """An empty file where each recorded blob's bytes go, so that gc scans what it would scan
    (it reads sizes from its records and deletes files by name, never reads them)."""
    count = 0
    folders = storage / "blobs" / "sha256"
    for fan_out in range(256):
        (folders / f"{fan_out:02x}").mkdir(parents=True)
    with engine.connect() as conn:
        for (blob,) in conn.execute(select(blobs.c.digest)).yield_per(BATCH):
            encoded = blob.removeprefix("sha256:")
            os.close(os.open(folders / encoded[:2] / encoded, os.O_CREAT | os.O_WRONLY, 0o644))
            count += 1
    return count


# Measuring.


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: Callable[[Path, int], str]  # (workdir, size) → a fresh database


def sqlite_backend() -> Backend:
    return Backend(
        "sqlite", lambda workdir, _size: f"sqlite:///{workdir / 'storage' / 'registry.db'}"
    )


def postgres_backend(server: str, schemas: list[str]) -> Backend:
    def fresh(_workdir: Path, size: int) -> str:
        schema = f"scale_{size}_{uuid.uuid4().hex[:6]}"
        run_sql(server, f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    return Backend("postgres", fresh)


def run_sql(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def write_config(workdir: Path, database_url: str) -> Path:
    config = workdir / "config.yml"
    settings = {
        "storage_path": str(workdir / "storage"),
        "database_url": database_url,
        "loglevel": "warning",
        "gc_untagged": "collect",
    }
    config.write_text(json.dumps({"bench": settings}) + "\n")  # JSON is YAML
    return config


@contextlib.contextmanager
def serving(config: Path, workdir: Path) -> Iterator[str]:
    port = free_port()
    command = [portside_executable(), "serve", "--config", str(config), "--flavor", "bench"]
    with (workdir / "server.log").open("wb") as out:
        process = subprocess.Popen(
            [*command, "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"portside serve did not start: see {workdir / 'server.log'}")
            time.sleep(0.2)
        yield url
    finally:
        stop(process)


def pages(size: int) -> dict[str, str]:
    """The requests timed, by label: each a page that should cost the same at any size."""
    deep = f"scale/r{size * 9 // 10:06d}"
    subject = digest("manifest", MANY_TAGS, 0)
    return {
        "catalog, first page": "/v2/_catalog?n=100",
        "catalog, page at 90%": f"/v2/_catalog?n=100&last={deep}",
        "tags, first page": f"/v2/{MANY_TAGS}/tags/list?n=100",
        "tags, page at 90%": f"/v2/{MANY_TAGS}/tags/list?n=100&last=v{size * 9 // 10:06d}",
        "search, one match": f"/v1/search?q=r{size // 2:06d}",
        "search, every repository": "/v1/search?q=scale",
        "referrers": f"/v2/{MANY_TAGS}/referrers/{subject}",
    }


def time_pages(url: str, size: int) -> dict[str, float]:
    """The median time of each page, in ms, over one kept-alive connection."""
    timings: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for label, path in pages(size).items():
            samples = []
            for n in range(SAMPLES + 2):  # the first two warm the caches
                started = time.perf_counter()
                response = client.get(path)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code} {response.text[:200]}")
                if n >= 2:
                    samples.append(elapsed * 1000)
            timings[label] = statistics.median(samples)
    return timings


def collect(config: Path) -> dict[str, Any]:
    """`portside gc` as a child: wall time, peak RSS (wait4's rusage, this child's alone) and
    its output."""
    command = [portside_executable(), "gc", "--config", str(config), "--flavor", "bench"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    output = process.stdout.read().decode() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        errors = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"portside gc failed:\n{output}{errors}")
    return {"seconds": elapsed, "peak_rss_mib": usage.ru_maxrss / 1024, "output": output}


def measure(size: int, backend: Backend, root: Path, gc: bool) -> dict[str, Any]:
    workdir = root / f"{backend.name}-{size}"
    (workdir / "storage").mkdir(parents=True)
    database_url = backend.database_url(workdir, size)
    upgrade(database_url)
    engine = create_engine(database_url)
    try:
        started = time.perf_counter()
        rows = bulk_fill(engine, layout(size), datetime.now(UTC) - AGE)
        files = touch_blob_files(workdir / "storage", engine)
        filled = time.perf_counter() - started
        log(f"{backend.name} {size:,}: {rows:,} rows, {files:,} blob files in {filled:.0f}s")
    finally:
        engine.dispose()
    config = write_config(workdir, database_url)
    with serving(config, workdir) as url:
        timings = time_pages(url, size)
    log(f"{backend.name} {size:,}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items()))
    result = {"size": size, "rows": rows, "blobs": files, "pages_ms": timings}
    if gc:
        result["gc"] = collected = collect(config)
        seconds, peak = collected["seconds"], collected["peak_rss_mib"]
        log(f"{backend.name} {size:,}: gc {seconds:.1f}s, peak RSS {peak:.0f} MiB")
        log(collected["output"])
    return result


def table(results: list[dict[str, Any]]) -> str:
    """The curves as markdown: pages (ms), then gc (s, MiB)."""
    sizes = [f"{r['size']:,}" for r in results]
    lines = ["| page (median ms) | " + " | ".join(sizes) + " |"]
    lines.append("| --- |" + " ---: |" * len(sizes))
    for label in results[0]["pages_ms"]:
        cells = " | ".join(f"{r['pages_ms'][label]:.1f}" for r in results)
        lines.append(f"| {label} | {cells} |")
    if "gc" not in results[0]:
        return "\n".join(lines)
    lines += ["", "| gc | " + " | ".join(sizes) + " |", "| --- |" + " ---: |" * len(sizes)]
    lines.append("| blobs | " + " | ".join(f"{r['blobs']:,}" for r in results) + " |")
    lines.append("| time (s) | " + " | ".join(f"{r['gc']['seconds']:.1f}" for r in results) + " |")
    peaks = " | ".join(f"{r['gc']['peak_rss_mib']:.0f}" for r in results)
    lines.append(f"| peak RSS (MiB) | {peaks} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--max", type=int, help="only the sizes up to this one")
    # gc takes most of a run at 100k (minutes): leave it out when only pages changed
    parser.add_argument("--pages-only", action="store_true", help="no garbage collection")
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    sizes = tuple(s for s in sizes if args.max is None or s <= args.max)
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="portside-scale-")))
        check_fill(root)
        log("bulk fill writes the rows pushes write")
        if args.backend == "sqlite":
            backend = sqlite_backend()
        else:
            server = stack.enter_context(postgres_server())
            schemas: list[str] = []
            stack.callback(lambda: [run_sql(server, f"DROP SCHEMA {s} CASCADE") for s in schemas])
            backend = postgres_backend(server, schemas)
        results = [measure(size, backend, root, not args.pages_only) for size in sizes]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"backend": args.backend, "results": results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
