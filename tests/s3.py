"""A real S3 server for the tests that need one, and a look into the bucket behind a store.

The `s3_server` fixture takes the server that the environment names (the variables that
`scripts/s3-test-server start DIR` exports: S3_ENDPOINT_URL, S3_BUCKET, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION), else starts one with that script for the session and
stops it at the end, else skips the tests with the reason.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from portside.storage.s3 import TAIL, S3BlobStore

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "s3-test-server"
MIB = 1024 * 1024


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    access_key: str | None
    secret_key: str | None
    region: str
    # Every store of a test session lives under this prefix, emptied at the end of the session.
    root: str = field(default_factory=lambda: f"portside-test-{uuid.uuid4().hex[:8]}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> S3Server:
        return cls(
            environ["S3_ENDPOINT_URL"],
            environ.get("S3_BUCKET") or "registry",
            environ.get("AWS_ACCESS_KEY_ID"),
            environ.get("AWS_SECRET_ACCESS_KEY"),
            environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )

    def new_prefix(self) -> str:
        """A prefix of its own for a test, so that tests never see each other's objects."""
        return f"{self.root}/{uuid.uuid4().hex[:12]}"

    def portside_settings(self) -> dict[str, Any]:
        """A `portside serve` config's storage keys for this server, under a new prefix (call it
        once per deployment: its instances share the prefix)."""
        return {
            "storage": "s3",
            "storage_path": self.new_prefix(),
            "s3_bucket": self.bucket,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": self.region,
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
        }

    def store(self, prefix: str | None = None, **options: Any) -> S3BlobStore:
        """A store under prefix, by default a new one."""
        return S3BlobStore(
            self.bucket,
            prefix or self.new_prefix(),
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            **options,
        )


def _exports(text: str) -> dict[str, str]:
    """NAME=value pairs of `export NAME=value` lines."""
    pairs = (shlex.split(line)[-1] for line in text.splitlines() if line.startswith("export "))
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if os.environ.get("S3_ENDPOINT_URL"):
        server = S3Server.from_environment(os.environ)
        yield server
        wipe(server.store(server.root))
        return
    if not SCRIPT.is_file():
        pytest.skip(f"S3_ENDPOINT_URL is not set and there is no {SCRIPT} to start a server")
    folder = tmp_path_factory.mktemp("s3-server")
    started = subprocess.run(
        [SCRIPT, "start", folder], capture_output=True, text=True, timeout=900, check=False
    )
    try:
        if started.returncode != 0:
            reason = " ".join(started.stderr.strip().splitlines()[-3:])
            pytest.skip(f"S3_ENDPOINT_URL is not set and {SCRIPT.name} failed: {reason}")
        yield S3Server.from_environment(_exports(started.stdout))  # a fresh, throwaway bucket
    finally:
        subprocess.run([SCRIPT, "stop", folder], capture_output=True, timeout=120, check=False)


def wipe(store: S3BlobStore) -> None:
    """Remove everything under the store's prefix, multipart uploads included."""
    client, bucket = store.client, store.bucket
    for upload in uploads(store):
        client.abort_multipart_upload(Bucket=bucket, Key=upload[0], UploadId=upload[1])
    names = object_names(store)
    for start in range(0, len(names), 1000):
        batch: list[ObjectIdentifierTypeDef] = [{"Key": name} for name in names[start:][:1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def object_names(store: S3BlobStore) -> list[str]:
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=store.prefix
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def uploads(store: S3BlobStore) -> list[tuple[str, str]]:
    """(name, upload id) of every multipart upload in progress under the store's prefix."""
    pages = store.client.get_paginator("list_multipart_uploads").paginate(
        Bucket=store.bucket, Prefix=store.prefix
    )
    return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]


def leftovers(store: S3BlobStore) -> list[str]:
    """What no key accounts for: multipart uploads that no unfinished object records, and
    tails beside a finished object."""
    names = set(object_names(store))
    recorded = set()
    found = []
    for name in sorted(names):
        if name.endswith(TAIL):
            if name.removesuffix(TAIL) in names:
                found.append(f"stale tail {name}")
            metadata = store.client.head_object(Bucket=store.bucket, Key=name)["Metadata"]
            recorded.add((name.removesuffix(TAIL), metadata.get("upload-id")))
    orphans = [name for name, upload in uploads(store) if (name, upload) not in recorded]
    return found + [f"upload of {name}" for name in orphans]
