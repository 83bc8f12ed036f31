"""The validated settings of one flavor: every key Portside reads, its type, default and meaning.

The classic docker-registry keys (`issue`, `loglevel`, `debug`, `storage`, `storage_path`,
`storage_redirect`, `search_backend`, `sqlalchemy_index_database`, `mirroring`, `cors`,
`email_exceptions`, and for S3 `s3_bucket`, `s3_region`, `s3_access_key`, `s3_secret_key`,
`s3_secure`, `s3_encrypt`, `boto_host`, `boto_port`) keep their names and meaning; the rest are
Portside's own, and config/classic.py translates or retires the other classic keys. Unknown keys
are errors (`extra="forbid"`).
"""

from __future__ import annotations

import os
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from portside.config.audit import AuditSettings
from portside.config.auth import AuthSettings
from portside.config.cors import CorsSettings
from portside.config.durations import Duration
from portside.config.health import HealthSettings
from portside.config.mail import EmailSettings
from portside.config.metrics import MetricsSettings
from portside.config.mirroring import MirroringSettings
from portside.config.notifications import NotificationsSettings
from portside.config.policies import PoliciesSettings
from portside.config.sizes import parse_size
from portside.config.ui import UiSettings
from portside.config.urls import base_url, listen_address

MiB = 1024 * 1024


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # Without a callback, OpenSSL would prompt on the terminal for the key's passphrase.
    raise _EncryptedKey


def _check_tls_files(certificate: Path, key: Path, client_ca: Path | None) -> None:
    """Load the files as the server will, so that a bad pair fails `config check`, not a worker."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, key, password=_no_password)
    except _EncryptedKey:
        raise ValueError(
            f"tls_key {str(key)!r} is encrypted; the server takes an unencrypted key "
            f"(openssl pkey -in ENCRYPTED -out {key.name}, then chmod 600)"
        ) from None
    except ssl.SSLError as exc:
        raise ValueError(
            f"tls_certificate {str(certificate)!r} and tls_key {str(key)!r} do not load as a "
            f"PEM certificate chain and its private key: {exc.reason or exc}"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ValueError(
                f"tls_client_ca {str(client_ca)!r} holds no PEM CA certificate: {exc.reason or exc}"
            ) from None


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
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: a line per event; `json`: a JSON object per line, with "
        "distribution's field names for requests (http.request.method, http.response.status, "
        "...), for log pipelines.",
    )
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
        description="Answer blob GETs with a 307 redirect to a short-lived presigned URL, so "
        "the bytes flow from the object store, which clients must be able to reach "
        "(`storage: s3` only).",
    )
    storage_redirect_seconds: int = Field(
        default=300,
        ge=1,
        le=7 * 24 * 3600,
        description="How long a redirect's presigned URL stays valid, in seconds (at most a "
        "week): long enough for a slow client to start its download.",
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
    s3_encrypt: bool = Field(
        default=False,
        description="Have S3 encrypt the stored objects (server-side encryption with "
        "S3-managed keys, AES256).",
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
    http_header_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a client may take to send a request's headers, counted from "
        "connecting, or on a kept-alive HTTP/1 connection from the previous response (so "
        "it is also how long such a connection may stay idle); then the connection is "
        "closed (30s, 1m, or seconds). Request bodies are not limited by it.",
    )
    http_idle_timeout: Duration = Field(
        default=timedelta(seconds=75),
        description="A connection that sends and receives nothing this long while its request "
        "waits for the client (a stalled body or download), or while it has no request "
        "in progress (HTTP/2; HTTP/1 closes at http_header_timeout if sooner), is closed "
        "(75s, 5m, or seconds). A slow upload goes on as long as bytes flow.",
    )
    http_max_connections: int = Field(
        default=4096,
        ge=16,
        le=1_000_000,
        description="Connections each worker process serves at once; more wait in the kernel's "
        "queue. Needs as many open files (the workers raise their soft limit to the hard one).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database; default "
        "`sqlite:///<storage_path>/registry.db`.",
    )
    sqlalchemy_index_database: str | None = Field(
        default=None,
        description="The classic registry's search index database (a SQLAlchemy URL): where "
        "`database_url` is not set, the metadata database.",
    )
    search_backend: Literal["sqlalchemy", ""] = Field(
        default="sqlalchemy",
        description="`sqlalchemy`: /v1/search finds repositories in the metadata database; "
        "empty (or null in a file that names the key, as the classic sample does): it answers "
        "with no results, as the classic registry without a search backend did.",
    )
    gc_grace_period: Duration = Field(
        default=timedelta(hours=1),
        description="How long unreferenced content stays before garbage collection removes "
        "it: 90s, 30m, 1h, 2d, or seconds. It spares pushes in progress, whose blobs are "
        "referenced by no manifest until the manifest arrives.",
    )
    gc_untagged: Literal["keep", "collect"] = Field(
        default="keep",
        description="Manifests that lost their tag: `keep` them until deleted by digest, or "
        "`collect` them after the grace period with what only they reference. Children of a "
        "kept index and referrers of a kept manifest stay either way.",
    )
    upload_expiry: Duration = Field(
        default=timedelta(hours=24),
        description="An upload session idle this long is abandoned: garbage collection "
        "removes it and its bytes (30m, 1h, 2d, or seconds).",
    )
    gc_interval: Duration | None = Field(
        default=None,
        description="Collect garbage in the background this often, in one server process at "
        "a time (1h, 1d); null: only when `portside gc` runs.",
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
    auth: AuthSettings | None = Field(
        default=None,
        description="Authentication and access control; null: an open registry, where anyone "
        "may pull, push and delete.",
    )
    mirroring: MirroringSettings | None = Field(
        default=None,
        description="A pull-through cache: names not stored here are fetched from upstream "
        "registries and kept (the classic key, see the README's cache section).",
    )
    cors: CorsSettings | None = Field(
        default=None,
        description="Cross-origin requests from web pages, with the classic registry's "
        "Flask-CORS keys; on when `cors.origins` is set (see the README).",
    )
    email_exceptions: EmailSettings | None = Field(
        default=None,
        description="Mail the operator about unhandled exceptions (requests answered 500), "
        "at most one mail a minute per process; on when `email_exceptions.smtp_host` is set.",
    )
    notifications: NotificationsSettings | None = Field(
        default=None,
        description="Webhooks: events (push, pull, mount, delete) POSTed to endpoints in "
        "distribution's format, kept in the metadata database until delivered (see the README).",
    )
    audit: AuditSettings | None = Field(
        default=None,
        description="The audit log: who pushed, deleted, logged in or was refused what, when "
        "and from where, kept in the metadata database (`portside audit` reads it); null: off.",
    )
    policies: PoliciesSettings = Field(
        default_factory=PoliciesSettings,
        description="Immutable tags, retention rules and quotas per namespace (see the "
        "README's section on keeping the registry in shape).",
    )
    tls_certificate: Path | None = Field(
        default=None,
        description="PEM file of the server's certificate, then any intermediate CA "
        "certificates; with `tls_key`, Portside serves HTTPS itself, HTTP/2 included. Null: "
        "plain HTTP, for loopback or behind a TLS proxy.",
    )
    tls_key: Path | None = Field(
        default=None,
        description="PEM file of the private key of `tls_certificate`, unencrypted (keep it "
        "readable by the service user only); given with `tls_certificate`.",
    )
    tls_client_ca: Path | None = Field(
        default=None,
        description="PEM file of the CA certificates that client certificates must chain to: "
        "with it, every client must present one (mutual TLS). Needs `tls_certificate`.",
    )
    public_url: str | None = Field(
        default=None,
        description="The URL clients reach the registry at, e.g. https://registry.example.com, "
        "for the absolute URLs Portside sends (the token realm). Null: taken from each "
        "request.",
    )
    trust_forwarded_headers: bool = Field(
        default=False,
        description="Build absolute URLs from the X-Forwarded-Proto, X-Forwarded-Host and "
        "Forwarded headers of a reverse proxy. Only behind a proxy that sets or clears them "
        "all: a client could forge them.",
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings,
        description="Prometheus metrics at GET /metrics, for loopback callers unless "
        "`metrics.allow` or `metrics.users` say more (see the README's metrics section).",
    )
    ui: UiSettings = Field(
        default_factory=UiSettings,
        description="The web UI at /ui/: repositories, tags, images, usage, delete; logins "
        "with the users and permissions of `auth` (see the README's web UI section).",
    )
    health: HealthSettings = Field(
        default_factory=HealthSettings,
        description="What /debug/health and /readyz check, and the drain file that takes an "
        "instance out of a load balancer (see the README's metrics and health section).",
    )

    @field_validator("loglevel", mode="before")
    @classmethod
    def _loglevel_any_case(cls, value: object) -> object:
        # The classic registry upper-cased the level, so `LOGLEVEL=INFO` worked there.
        return value.lower() if isinstance(value, str) else value

    @field_validator("search_backend", mode="before")
    @classmethod
    def _search_backend_any_case(cls, value: object) -> object:
        # The classic registry lower-cased it; any other value named a Python module there.
        if isinstance(value, str) and value.lower() not in ("sqlalchemy", ""):
            raise ValueError(
                f"expected sqlalchemy (the built-in search), or empty for no search, got "
                f"{value!r}: the classic registry's other search backends were Python modules"
            )
        return value.lower() if isinstance(value, str) else value

    @field_validator("max_manifest_size", "max_blob_size", "s3_part_size", mode="before")
    @classmethod
    def _size_with_unit(cls, value: object) -> object:
        return parse_size(value)

    @field_validator("http_header_timeout", "http_idle_timeout")
    @classmethod
    def _timeout_is_sane(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(hours=1):
            raise ValueError("expected a timeout from 1s to 1h")
        return value

    @field_validator("gc_grace_period", "upload_expiry", "gc_interval")
    @classmethod
    def _duration_is_not_negative(cls, value: timedelta | None, info: ValidationInfo) -> object:
        if value is not None and value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        if value is not None and info.field_name == "gc_interval" and not value:
            raise ValueError("a background collection interval must be longer than 0s")
        return value

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        return listen_address(value)

    @field_validator("tls_certificate", "tls_key", "tls_client_ca")
    @classmethod
    def _file_is_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                value.open("rb").close()
            except OSError as exc:
                raise ValueError(f"cannot read {str(value)!r}: {exc.strerror or exc}") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_is_a_base(cls, value: str | None) -> str | None:
        return None if value is None else base_url(value)

    @model_validator(mode="after")
    def _tls_is_complete(self) -> Settings:
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ValueError("tls_certificate and tls_key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_certificate is None:
            raise ValueError("tls_client_ca needs tls_certificate and tls_key")
        if self.tls_certificate is not None and self.tls_key is not None:
            _check_tls_files(self.tls_certificate, self.tls_key, self.tls_client_ca)
        return self

    @model_validator(mode="after")
    def _s3_is_complete(self) -> Settings:
        if self.storage == "s3":
            if not self.s3_bucket:
                raise ValueError("storage: s3 needs s3_bucket")
            if self.database_url is None and self.sqlalchemy_index_database is None:
                # The default SQLite file would go under storage_path, a key prefix here.
                raise ValueError("storage: s3 needs database_url (PostgreSQL, or a SQLite file)")
        elif self.storage_redirect:
            raise ValueError("storage_redirect needs storage: s3")
        if self.s3_endpoint_url is not None and self.boto_host is not None:
            raise ValueError("give s3_endpoint_url or boto_host, not both")
        if self.boto_port is not None and self.boto_host is None:
            raise ValueError("boto_port needs boto_host")
        return self

    @model_validator(mode="after")
    def _metrics_readers_can_log_in(self) -> Settings:
        metrics = self.metrics
        if (metrics.users or metrics.groups) and self.auth is None:
            raise ValueError("metrics.users and metrics.groups need an auth section")
        if metrics.listen is not None and (metrics.listen_host, metrics.listen_port) == (
            self.host,
            self.port,
        ):
            raise ValueError("metrics.listen must differ from listen (/metrics is served there)")
        return self

    @model_validator(mode="after")
    def _token_key_has_a_folder(self) -> Settings:
        token = self.auth.token if self.auth is not None else None
        # Its default would go under storage_path, a key prefix with storage: s3.
        if self.storage == "s3" and token is not None and token.key_path is None:
            raise ValueError("auth.token with storage: s3 needs auth.token.key_path")
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
    def tls(self) -> bool:
        return self.tls_certificate is not None

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def metadata_url(self) -> str:
        return (
            self.database_url
            or self.sqlalchemy_index_database
            or f"sqlite:///{self.storage_path / 'registry.db'}"
        )

    @property
    def token_key_path(self) -> Path:
        """The built-in token service's signing key file."""
        token = self.auth.token if self.auth is not None else None
        given = token.key_path if token is not None else None
        return given or self.storage_path / "auth" / "token-key.pem"
