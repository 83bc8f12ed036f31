"""How long the web UI's pages take to render at 1k, 10k and 100k repositories (and as many tags
in one repository): the server's own time, the app called in process (no socket, no client), so
that what is measured is the page: its queries, its storage reads and its template.

The registry is filled as bench/scale.py fills it (its layout and bulk_fill: the rows real pushes
write), on SQLite. The many-tags repository's manifests and image configs are written to storage
as real documents, since its tag page reads them (platforms); the repository list reads no blob.

    .venv/bin/python bench/ui.py              # 1k, 10k, 100k
    .venv/bin/python bench/ui.py --max 1000   # 1k only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import quote

import httpx
from scale import AGE, MANY_TAGS, OCI_MANIFEST, SIZES, bulk_fill, digest, layout
from services import log
from sqlalchemy import create_engine, select

from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.metadata.tables import repositories
from portside.server.app import create_app

SAMPLES: Final = 15
RESULTS: Final = Path(__file__).parent / "results" / "ui-latest.json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"


def write_blob(storage: Path, blob: str, content: bytes) -> None:
    encoded = blob.removeprefix("sha256:")
    folder = storage / "blobs" / "sha256" / encoded[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / encoded).write_bytes(content)


def write_many_tags_documents(storage: Path, size: int) -> None:
    """The manifest and config of each image of MANY_TAGS (bench/scale.py's many_tags), as the
    tag page reads them; the digests are scale.py's, not the documents' own (nothing here
    checks them)."""
    layer = digest("layer", MANY_TAGS)
    for i in range(size):
        config = {
            "architecture": "arm64" if i % 2 else "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/app"], "Labels": {"n": str(i)}},
            "rootfs": {"type": "layers", "diff_ids": [layer]},
            "history": [{"created_by": "COPY app /app"}],
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": digest("config", MANY_TAGS, i),
                "size": 1500,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer,
                    "size": 20_000_000,
                }
            ],
        }
        write_blob(storage, digest("config", MANY_TAGS, i), json.dumps(config).encode())
        write_blob(storage, digest("manifest", MANY_TAGS, i), json.dumps(manifest).encode())


def pages(size: int, deep_pushed: str) -> dict[str, str]:
    deep = f"scale/r{size * 9 // 10:06d}"
    image = digest("manifest", MANY_TAGS, size // 2)
    return {
        "repositories by name, first page": "/ui/",
        "repositories by name, page at 90%": f"/ui/?after={deep}",
        "repositories by size, first page": "/ui/?sort=size",
        "repositories by last push, first page": "/ui/?sort=pushed",
        "repositories by last push, page at 90%": f"/ui/?sort=pushed&after={deep_pushed}",
        "search, one match": f"/ui/?q=r{size // 2:06d}",
        "search, every repository": "/ui/?q=scale",
        "tags, first page": f"/ui/repositories/{MANY_TAGS}",
        "tags, page at 90%": f"/ui/repositories/{MANY_TAGS}?after=v{size * 9 // 10:06d}",
        "an image": f"/ui/images/{MANY_TAGS}@{image}",
        "usage": "/ui/usage",
    }


async def time_pages(settings: Settings, paths: dict[str, str]) -> dict[str, float]:
    app = create_app(settings)
    timings: dict[str, float] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for label, path in paths.items():
            samples = []
            for n in range(SAMPLES + 2):  # two warm the caches
                started = time.perf_counter()
                response = await client.get(path)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
                if n >= 2:
                    samples.append(elapsed * 1000)
            timings[label] = statistics.median(samples)
    await app.state.registry.metadata.close()
    return timings


def measure(size: int, root: Path) -> dict[str, object]:
    storage = root / f"ui-{size}"
    storage.mkdir()
    url = f"sqlite:///{storage / 'registry.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        started = time.perf_counter()
        rows = bulk_fill(engine, layout(size), datetime.now(UTC) - AGE)
        write_many_tags_documents(storage, size)
        log(f"ui {size:,}: {rows:,} rows in {time.perf_counter() - started:.0f}s")
        with engine.connect() as conn:
            deep = f"scale/r{size * 9 // 10:06d}"
            found = conn.execute(
                select(repositories.c.pushed_at, repositories.c.id).where(
                    repositories.c.name == deep
                )
            ).one()
    finally:
        engine.dispose()
    cursor = quote(f"{found.pushed_at.replace(tzinfo=UTC).isoformat()}~{found.id}")
    settings = Settings(storage_path=storage, workers=1, loglevel="warning")
    timings = asyncio.run(time_pages(settings, pages(size, cursor)))
    log(f"ui {size:,}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items()))
    return {"size": size, "rows": rows, "pages_ms": timings}


def table(results: list[dict[str, object]]) -> str:
    sizes = [f"{r['size']:,}" for r in results]
    lines = ["| page (median ms, in process) | " + " | ".join(sizes) + " |"]
    lines.append("| --- |" + " ---: |" * len(sizes))
    first = results[0]["pages_ms"]
    assert isinstance(first, dict)
    for label in first:
        cells = " | ".join(f"{r['pages_ms'][label]:.1f}" for r in results)  # type: ignore[index]
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, help="only the sizes up to this one")
    args = parser.parse_args()
    sizes = [s for s in SIZES if args.max is None or s <= args.max]
    with tempfile.TemporaryDirectory(prefix="portside-ui-bench-") as root:
        results = [measure(size, Path(root)) for size in sizes]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"backend": "sqlite", "results": results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
