"""The validated settings of one flavor: every key Portside reads, its type, default and meaning.

The classic docker-registry keys (`issue`, `loglevel`, `debug`, `storage`, `storage_path`,
`storage_redirect`, and for S3 `s3_bucket`, `s3_region`, `s3_access_key`, `s3_secret_key`,
`s3_secure`, `boto_host`, `boto_port`) keep their names and meaning; the rest are Portside's own.
Unknown keys are errors (`extra="forbid"`).
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MiB = 1024 * 1024

# Decimal (kB) and binary (KiB, or Kubernetes' Ki) units; a bare `K`, `M` or `G` is refused
# because tools disagree on whether it means 1000 or 1024.
_SIZE_UNITS = {"": 1, "b": 1} | {
    unit: base**power
    for power, prefix in enumerate("kmgt", start=1)
    for unit, base in ((f"{prefix}b", 1000), (f"{prefix}ib", 1024), (f"{prefix}i", 1024))
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def _parse_size(value: object) -> object:
    """Turn `4MiB`, `1.5GB` or `"4194304"` into a number of bytes; other values pass through."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 4194304, 4MiB or 10GiB, got {value!r}")
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value)
    factor = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise ValueError(
            f"expected a size such as 4194304, 4MiB or 10GiB (units B, kB, MB, GB, TB, "
            f"KiB, MiB, GiB, TiB), got {value!r}"
        )
    size = Decimal(match.group(1)) * factor
    if size != size.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(size)


def default_workers() -> int:
    """Several worker processes by default: one per core, at least two."""
    return max(2, os.cpu_count() or 1)


class Settings(BaseModel):
    """One flavor of the configuration, resolved and validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issue: str = Field(
        default='"docker-registry server"',
        description="The banner that GET / answers with (the classic registry's `issue`).",
    )
    loglevel: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="Log level of the server's log lines on stdout."
    )
    debug: bool = Field(default=False, description="Log at debug level and include tracebacks.")
    storage: Literal["local", "s3"] = Field(
        default="local",
        description="Blob storage driver: `local` keeps blobs under `storage_path`; `s3` keeps "
        "them in the S3-compatible bucket `s3_bucket`, under the key prefix `storage_path`.",
    )
    storage_path: Path = Field(
        default=Path("/var/lib/portside"),
        description="Folder for blobs, upload sessions and (by default) the SQLite database; "
        "with `storage: s3`, the key prefix of the blobs in the bucket.",
    )
    storage_redirect: bool = Field(
        default=False,
        description="Answer blob GETs with a redirect to a presigned URL (`storage: s3` only).",
    )
    s3_bucket: str | None = Field(
        default=None, description="S3 bucket holding the blobs; required with `storage: s3`."
    )
    s3_region: str | None = Field(
        default=None,
        description="Region of the bucket; null takes it from the AWS environment or profile "
        "(AWS_DEFAULT_REGION), else us-east-1.",
    )
    s3_access_key: str | None = Field(
        default=None,
        description="S3 access key id; null takes credentials from the AWS environment, "
        "profile or instance role, as the aws command does.",
    )
    s3_secret_key: str | None = Field(
        default=None, description="S3 secret access key, given with `s3_access_key`."
    )
    boto_host: str | None = Field(
        default=None,
        description="Host name of an S3-compatible server (Ceph RGW, MinIO); null means AWS S3.",
    )
    boto_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of `boto_host`; null means 443, or 80 when `s3_secure` is false.",
    )
    s3_secure: bool = Field(default=True, description="Talk to S3 over HTTPS; false: plain HTTP.")
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Full URL of an S3-compatible server, e.g. http://127.0.0.1:7480, instead "
        "of `boto_host`, `boto_port` and `s3_secure`.",
    )
    s3_path_style: bool = Field(
        default=True,
        description="Name the bucket in the URL path (host/bucket/key), as most S3-compatible "
        "servers need; false: in the host name (bucket.host/key).",
    )
    s3_part_size: int = Field(
        default=8 * MiB,
        ge=5 * MiB,
        le=512 * MiB,
        description="Part size of the multipart uploads that blob uploads stream to S3 (5MiB "
        "to 512MiB): what a worker buffers per upload in progress.",
    )
    listen: str = Field(
        default="127.0.0.1:5000",
        description="Address and port to listen on, HOST:PORT (`--listen` overrides it).",
    )
    workers: int = Field(
        default_factory=default_workers,
        ge=1,
        le=64,
        description="Worker processes serving requests (default: one per core, at least two).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database; default "
        "`sqlite:///<storage_path>/registry.db`.",
    )
    delete_enabled: bool = Field(
        default=True,
        description="Allow DELETE of manifests, tags and blobs; when false they answer "
        "405 UNSUPPORTED.",
    )
    max_manifest_size: int = Field(
        default=4 * MiB,
        ge=1024,
        description="Largest manifest accepted (413 above it), in bytes or with a unit: 4MiB.",
    )
    max_blob_size: int | None = Field(
        default=None,
        ge=1,
        description="Largest blob upload accepted, in bytes or with a unit (10GiB); "
        "null means no limit.",
    )

    @field_validator("loglevel", mode="before")
    @classmethod
    def _loglevel_any_case(cls, value: object) -> object:
        # The classic registry upper-cased the level, so `LOGLEVEL=INFO` worked there.
        return value.lower() if isinstance(value, str) else value

    @field_validator("max_manifest_size", "max_blob_size", "s3_part_size", mode="before")
    @classmethod
    def _size_with_unit(cls, value: object) -> object:
        return _parse_size(value)

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @model_validator(mode="after")
    def _s3_is_complete(self) -> Settings:
        if self.storage == "s3":
            if not self.s3_bucket:
                raise ValueError("storage: s3 needs s3_bucket")
            if self.database_url is None:
                # The default SQLite file would go under storage_path, a key prefix here.
                raise ValueError("storage: s3 needs database_url (PostgreSQL, or a SQLite file)")
        elif self.storage_redirect:
            raise ValueError("storage_redirect needs storage: s3")
        if self.s3_endpoint_url is not None and self.boto_host is not None:
            raise ValueError("give s3_endpoint_url or boto_host, not both")
        if self.boto_port is not None and self.boto_host is None:
            raise ValueError("boto_port needs boto_host")
        return self

    @property
    def s3_endpoint(self) -> str | None:
        """The S3 server's URL from `s3_endpoint_url` or `boto_host`; None for AWS S3."""
        if self.boto_host is None:
            return self.s3_endpoint_url
        host = f"[{self.boto_host}]" if ":" in self.boto_host else self.boto_host
        port = "" if self.boto_port is None else f":{self.boto_port}"
        return f"{'https' if self.s3_secure else 'http'}://{host}{port}"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def metadata_url(self) -> str:
        return self.database_url or f"sqlite:///{self.storage_path / 'registry.db'}"
