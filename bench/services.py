"""The shared services of `--backend s3`: an S3-compatible object store and a PostgreSQL server.

Each is taken from the environment when it names one (S3_ENDPOINT_URL and the AWS_* variables
that scripts/s3-test-server exports; PORTSIDE_TEST_POSTGRES_URL, which
scripts/postgres-test-cluster prints), else started for the run and stopped at its end. Every
registry gets a prefix of the bucket and a schema of the database of its own; both are removed at
the end, so a run leaves nothing behind in services it did not start.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
S3_SERVER = REPO_DIR / "scripts" / "s3-test-server"
POSTGRES_CLUSTER = REPO_DIR / "scripts" / "postgres-test-cluster"
POSTGRES_VARIABLE = "PORTSIDE_TEST_POSTGRES_URL"


class ServiceError(RuntimeError):
    """An S3 server or a PostgreSQL server could not be had."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Services:
    """Where the registries of one run keep blobs and metadata."""

    s3_endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    postgres_url: str
    run: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    schemas: list[str] = field(default_factory=list)

    def prefix(self, registry: str) -> str:
        """The key prefix of a registry's objects in the bucket."""
        return f"{self.run}/{registry}"

    def database_url(self, registry: str) -> str:
        """A URL of a new, empty schema for a registry's metadata, dropped by cleanup()."""
        from sqlalchemy import create_engine, make_url, text

        schema = f"{self.run}_{registry}".replace("-", "_")
        engine = create_engine(self.postgres_url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
        finally:
            engine.dispose()
        self.schemas.append(schema)
        url = make_url(self.postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def cleanup(self) -> None:
        """Drop the run's schemas and objects, multipart uploads included."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.postgres_url)
        try:
            with engine.begin() as conn:
                for schema in self.schemas:
                    conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        finally:
            engine.dispose()
        client = self.s3_client()
        prefix = f"{self.run}/"
        for page in client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            names: Any = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if names:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": names, "Quiet": True})

    def s3_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


def _exports(text: str) -> dict[str, str]:
    """NAME=value of each `export NAME=value` line a service script prints."""
    pairs = (shlex.split(line)[-1] for line in text.splitlines() if line.startswith("export "))
    return dict(pair.split("=", 1) for pair in pairs)


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ServiceError(f"{what} failed:\n{tail}")
    return done.stdout


@contextmanager
def s3_server(workdir: Path) -> Iterator[dict[str, str]]:
    if os.environ.get("S3_ENDPOINT_URL"):
        log(f"S3: {os.environ['S3_ENDPOINT_URL']} (from the environment)")
        yield dict(os.environ)
        return
    if not S3_SERVER.is_file():
        raise ServiceError(f"S3_ENDPOINT_URL is not set and there is no {S3_SERVER}")
    folder = workdir / "s3-server"
    folder.mkdir()
    log(f"S3: starting {S3_SERVER} in {folder} (about 10 s)")
    try:
        environment = _exports(_run([str(S3_SERVER), "start", str(folder)], "s3-server start"))
        yield environment
    finally:
        subprocess.run(
            [str(S3_SERVER), "stop", str(folder)], capture_output=True, timeout=120, check=False
        )
        log("S3: stopped")


@contextmanager
def postgres_server() -> Iterator[str]:
    if url := os.environ.get(POSTGRES_VARIABLE):
        log(f"PostgreSQL: {POSTGRES_VARIABLE} (from the environment)")
        yield url
        return
    # Outside the run's private temp dir: the server runs as the postgres user, which must be
    # able to enter its folder.
    folder = Path(tempfile.mkdtemp(prefix="portside-bench-pg-", dir="/tmp"))
    log(f"PostgreSQL: starting {POSTGRES_CLUSTER.name} in {folder}")
    try:
        printed = _run([str(POSTGRES_CLUSTER), "start", str(folder)], "postgres-test-cluster")
        url = _exports(printed).get(POSTGRES_VARIABLE)
        if not url:
            raise ServiceError(f"postgres-test-cluster printed no {POSTGRES_VARIABLE}")
        yield url
    finally:
        subprocess.run(
            [str(POSTGRES_CLUSTER), "stop", str(folder)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)
        log("PostgreSQL: stopped")


@contextmanager
def s3_services(workdir: Path) -> Iterator[Services]:
    """An object store and a database for the run, started here if the environment names none;
    whatever the run put in them is removed at the end."""
    with ExitStack() as stack:
        environment = stack.enter_context(s3_server(workdir))
        postgres_url = stack.enter_context(postgres_server())
        services = Services(
            s3_endpoint=environment["S3_ENDPOINT_URL"],
            bucket=environment.get("S3_BUCKET") or "registry",
            access_key=environment.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=environment.get("AWS_SECRET_ACCESS_KEY", ""),
            region=environment.get("AWS_DEFAULT_REGION") or "us-east-1",
            postgres_url=postgres_url,
        )
        try:
            yield services
        finally:
            try:
                services.cleanup()
            except Exception as error:  # the servers may be gone already; say so, go on
                log(f"could not remove the run's objects and schemas: {error!r}")
