"""`portside import distribution s3://BUCKET/ROOT` timed: a distribution tree in a bucket (written
by bench/moving.py's fill into a folder, then uploaded as distribution's s3 driver lays it out)
imported into Portside on the same S3 server (server-side copies, each blob read once to hash
it), again with nothing new, into another prefix with the server named by another URL (localhost
for 127.0.0.1), which the import takes for another server and streams to, and into a folder
(streamed); a dry run first (every blob read).

Needs an S3 server: the variables `scripts/s3-test-server start DIR` prints (S3_ENDPOINT_URL,
S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).

    .venv/bin/python bench/moving_s3.py                      # 1 GB in 50 MB layers
    .venv/bin/python bench/moving_s3.py --gb 0.2 --layer-mb 1  # 200 repositories, small layers
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import yaml
from moving import fill, timed

ROOT = "distribution/root"


def client() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def upload(s3: Any, bucket: str, folder: Path) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda p: s3.upload_file(str(p), bucket, f"{ROOT}/{p.relative_to(folder)}"), files
            )
        )


def empty(s3: Any, bucket: str, prefix: str = "") -> None:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        if keys := [{"Key": item["Key"]} for item in page.get("Contents", [])]:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="bytes of layers in the tree")
    parser.add_argument("--layer-mb", type=float, default=50, help="size of each layer")
    parser.add_argument("--dir", type=Path, help="work folder [default: a temporary one]")
    options = parser.parse_args()
    s3 = client()
    source = f"distribution-bench-{uuid.uuid4().hex[:8]}"
    target = os.environ.get("S3_BUCKET") or "registry"
    prefix = f"portside-bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=source)
    try:
        with tempfile.TemporaryDirectory(prefix="portside-moving-s3-", dir=options.dir) as work:
            base = Path(work)
            total = int(options.gb * 1e9)
            started = time.perf_counter()
            images = fill(base / "distribution", total, int(options.layer_mb * 1024 * 1024))
            upload(s3, source, base / "distribution")
            print(
                f"wrote {images} images, {total / 1e9:.2f} GB to s3://{source}/{ROOT} "
                f"in {time.perf_counter() - started:.0f} s"
            )
            s3_settings = {
                "storage": "s3",
                "storage_path": prefix,
                "s3_bucket": target,
                "s3_endpoint_url": os.environ["S3_ENDPOINT_URL"],
                "s3_region": os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                "database_url": f"sqlite:///{base / 's3.db'}",
            }
            into_s3, into_folder = base / "s3.yml", base / "folder.yml"
            into_s3.write_text(yaml.safe_dump({"dev": s3_settings}))
            streamed = base / "streamed.yml"
            streamed_settings = {
                **s3_settings,
                "storage_path": f"{prefix}/streamed",
                "database_url": f"sqlite:///{base / 'streamed.db'}",
            }
            streamed.write_text(yaml.safe_dump({"dev": streamed_settings}))
            into_folder.write_text(yaml.safe_dump({"dev": {"storage_path": str(base / "p")}}))
            url = f"s3://{source}/{ROOT}"
            # A config without S3 keys names the tree's server on the command line.
            endpoint = ["--s3-endpoint-url", os.environ["S3_ENDPOINT_URL"]]
            elsewhere = ["--s3-endpoint-url", endpoint[1].replace("127.0.0.1", "localhost")]
            results: dict[str, Any] = {"images": images, "bytes": total}
            steps = [
                ("dry run", ["--config", str(into_s3), "--dry-run", url]),
                ("into S3", ["--config", str(into_s3), url]),
                ("into S3 again", ["--config", str(into_s3), url]),
                ("S3, streamed", ["--config", str(streamed), *elsewhere, url]),
                ("into a folder", ["--config", str(into_folder), *endpoint, url]),
            ]
            for step, args in steps:
                seconds, said = timed("import", "distribution", *args)
                results[step] = seconds
                print(
                    f"{step:>13}: {seconds:7.1f} s  {total / 1e9 / seconds:5.2f} GB/s  "
                    f"{images / seconds:7.1f} images/s   ({said})"
                )
            print(json.dumps(results))
    finally:
        empty(s3, target, prefix + "/")
        empty(s3, source)
        s3.delete_bucket(Bucket=source)


if __name__ == "__main__":
    main()
