"""Moving from distribution in place on S3: the real distribution (Debian's `docker-registry`)
with its s3 driver writes its tree into a bucket of the test server (filled as
test_e2e_import.py fills it: a multi-arch index, images sharing a base layer, a deleted image);
`portside import distribution s3://BUCKET/ROOTDIRECTORY` takes it over into Portside's own S3
store (SQLite metadata), SIGKILLed once and rerun. Every request the import makes to S3 goes
through an nginx whose log counts the bytes each way: the blobs are copied server-side (almost
nothing goes up) and read once to hash them. Then every tag pulls with skopeo, same digests."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from s3 import S3Server, object_names, wipe
from upstream.registries import running_distribution

from .balancer import Balancer
from .conftest import ServerFactory
from .server import PORTSIDE
from .test_e2e_import import fill, pulls_as_distribution_wrote

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
ROOT = "distribution/root"  # distribution's s3 rootdirectory


def import_command(config: Path, bucket: str, *options: str) -> list[str]:
    source = f"s3://{bucket}/{ROOT}"
    return [str(PORTSIDE), "import", "distribution", "--config", str(config), *options, source]


def distribution_storage(s3_server: S3Server, bucket: str) -> dict[str, object]:
    """distribution's s3 driver on the test server, in bucket under ROOT."""
    return {
        "s3": {
            "accesskey": s3_server.access_key,
            "secretkey": s3_server.secret_key,
            "region": s3_server.region,
            "regionendpoint": s3_server.endpoint_url,
            "bucket": bucket,
            "rootdirectory": f"/{ROOT}",
            "secure": s3_server.endpoint_url.startswith("https"),
            "v4auth": True,
            "chunksize": 5 * MiB,
        }
    }


def listing(client: Any, bucket: str) -> dict[str, str]:
    """Every object of the bucket, with its ETag."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", [])}


def test_a_real_distribution_bucket_imports_by_server_side_copies_and_every_tag_pulls(
    tmp_path: Path, s3_server: S3Server, portside_factory: ServerFactory
) -> None:
    settings = s3_server.portside_settings()
    portside = s3_server.store(settings["storage_path"])
    client = portside.client
    bucket = f"distribution-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    proxy = Balancer(tmp_path / "counting-proxy", [s3_server.endpoint_url.split("://")[1]])
    try:
        storage = distribution_storage(s3_server, bucket)
        with running_distribution(tmp_path / "distribution", storage=storage) as distribution:
            digests = fill(tmp_path, distribution.host)
        before = listing(client, bucket)
        assert any(key.startswith(f"{ROOT}/docker/registry/v2/blobs/") for key in before)

        proxy.start()
        database = tmp_path / "registry.db"
        config = tmp_path / "import.yml"
        through_proxy = {**settings, "s3_endpoint_url": proxy.url}
        config.write_text(
            yaml.safe_dump({"dev": {**through_proxy, "database_url": f"sqlite:///{database}"}})
        )

        planned = subprocess.run(
            import_command(config, bucket, "--dry-run"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert "would import 3 repositories, 4 tags" in planned.stdout
        assert not database.exists()
        assert object_names(portside) == []

        # Killed once it has put a first blob in place, then run again to the end.
        counted = len(proxy.lines())
        killed = subprocess.Popen(import_command(config, bucket), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while killed.poll() is None and time.monotonic() < deadline:
            if any("/blobs/" in name for name in object_names(portside)):
                break
            time.sleep(0.05)
        assert killed.poll() is None, "the import ended before it could be killed"
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        done = subprocess.run(
            import_command(config, bucket), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "imported 3 repositories, 4 tags, 6 manifests" in done.stdout
        assert "copied server-side)" in done.stdout
        assert "streamed" not in done.stdout
        requests = proxy.lines()[counted:]
        up, down = sum(r.received for r in requests), sum(r.sent for r in requests)
        blob_bytes = sum(
            size for key, size in _sizes(client, bucket).items() if "/v2/blobs/" in key
        )
        print(f"import through S3: {up:,} bytes up, {down:,} down; the tree's blobs {blob_bytes:,}")
        assert up < blob_bytes // 20, (up, blob_bytes)  # no blob went up: requests and manifests

        again = subprocess.run(import_command(config, bucket), capture_output=True, text=True)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 blobs (0 bytes) taken over" in again.stdout
        assert listing(client, bucket) == before  # the source is left as it was

        server = portside_factory(**settings, database_url=f"sqlite:///{database}")
        pulls_as_distribution_wrote(server, digests, tmp_path)
        missing = httpx.get(f"{server.url}/v2/team/app/manifests/{digests['deleted']}")
        assert missing.status_code == 404
    finally:
        proxy.stop()
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket)
        for upload in (u for page in pages for u in page.get("Uploads", [])):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for key in listing(client, bucket):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)
        wipe(portside)


def _sizes(client: Any, bucket: str) -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}
