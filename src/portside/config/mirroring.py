"""The `mirroring` section: the classic registry's pull-through cache, grown to several upstreams.

    mirroring:
        source: https://registry-1.docker.io     # classic: names not stored here come from it
        source_index: https://index.docker.io    # classic v1 index: accepted, not used
        tags_cache_ttl: 172800                   # classic: re-check a cached tag this often
        upstreams:                               # Portside: more upstreams, each at a prefix
            ghcr:                                # ghcr/owner/app is ghcr.io's owner/app
                url: https://ghcr.io
                username: _env:GHCR_USER
                password: _env:GHCR_TOKEN

`source` is the root upstream: a name with no upstream prefix that is not stored here is looked
up there, which is what docker's `registry-mirrors` needs (it asks for `library/alpine`), and
pushes of such names stay local. A prefixed upstream's namespace is a cache only, refused to
pushes, unless it is `merged`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portside.config.durations import Duration
from portside.config.urls import base_url

# The registry name a client says in `?ns=` for Docker Hub, whose API lives at another host.
DOCKER_HUB_API: Final = "registry-1.docker.io"
DOCKER_HUB: Final = "docker.io"
ROOT: Final = ""  # the key of the classic `source` among the upstreams
UPSTREAM_EXAMPLE: Final = "https://registry-1.docker.io"


class UpstreamSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="The upstream registry, e.g. https://registry-1.docker.io.")
    username: str | None = Field(
        default=None, description="User for the upstream's Basic auth or token service."
    )
    password: str | None = Field(default=None, description="Its password or access token.")
    merged: bool = Field(
        default=False,
        description="Serve local content of the namespace first, then the upstream's; pushes "
        "to it stay local. False: the namespace is a cache, refused to pushes.",
    )
    tags_cache_ttl: Duration | None = Field(
        default=None,
        description="Re-check a cached tag with the upstream at most this often; null: the "
        "section's `tags_cache_ttl`.",
    )
    names: list[str] = Field(
        default_factory=list,
        description="Registry names clients give in `?ns=` for this upstream (containerd's "
        "mirrors); its URL's host always counts, and docker.io for registry-1.docker.io.",
    )
    token_realm_hosts: list[str] = Field(
        default_factory=list,
        description="Other hosts (host or host:port) whose token service may receive the "
        "credentials, such as auth.docker.io; any other realm gets no credentials.",
    )
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to verify the upstream's TLS certificate."
    )

    @field_validator("url")
    @classmethod
    def _url_is_a_base(cls, value: str) -> str:
        return base_url(value, UPSTREAM_EXAMPLE)

    @model_validator(mode="after")
    def _password_needs_user(self) -> UpstreamSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def serves(self, registry_name: str) -> bool:
        """Whether a client's `?ns=` value names this upstream."""
        wanted = registry_name.strip().lower()
        known = {self.host, *(name.lower() for name in self.names)}
        if self.host == DOCKER_HUB_API:
            known.add(DOCKER_HUB)
        return wanted in known


class MirroringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(
        default=None,
        description="The classic key: the registry that names not stored here (and not under "
        "an upstream's prefix) are pulled from and cached; null: no root upstream.",
    )
    source_index: str | None = Field(
        default=None,
        description="The classic registry's v1 index of `source`: accepted, not used (the v2 "
        "API has no index).",
    )
    source_username: str | None = Field(
        default=None, description="User for `source`'s Basic auth or token service."
    )
    source_password: str | None = Field(default=None, description="Its password or token.")
    tags_cache_ttl: Duration = Field(
        default=timedelta(seconds=172800),
        description="Re-check a cached tag with its upstream at most this often (the classic "
        "default, 2 days); digests never change and are never re-checked.",
    )
    upstreams: dict[str, UpstreamSettings] = Field(
        default_factory=dict,
        description="More upstreams, by the namespace prefix that mounts each: `hub` makes "
        "hub/library/alpine the upstream's library/alpine.",
    )
    connect_timeout: Duration = Field(
        default=timedelta(seconds=5), description="Time to connect to an upstream."
    )
    read_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="Time an upstream may take to answer, or between two reads of a blob.",
    )
    failure_threshold: int = Field(
        default=5,
        ge=1,
        description="Failures in a row after which an upstream is left alone (cached content "
        "is served, uncached names fail at once) for `retry_after`.",
    )
    retry_after: Duration = Field(
        default=timedelta(seconds=30), description="How long an upstream is left alone."
    )
    keep_unpulled: Duration | None = Field(
        default=timedelta(days=30),
        description="Cached tags not pulled for this long are removed by garbage collection "
        "(with what only they reference); null keeps them.",
    )

    @field_validator("source")
    @classmethod
    def _source_is_a_base(cls, value: str | None) -> str | None:
        return None if value is None else base_url(value, UPSTREAM_EXAMPLE)

    @field_validator("upstreams")
    @classmethod
    def _prefixes_are_namespaces(
        cls, value: dict[str, UpstreamSettings]
    ) -> dict[str, UpstreamSettings]:
        for prefix in value:
            if not prefix or "/" in prefix or prefix != prefix.lower() or not prefix.isascii():
                raise ValueError(
                    f"upstream prefix {prefix!r} must be one lower-case path component, such "
                    f"as hub or ghcr"
                )
        return value

    @model_validator(mode="after")
    def _source_password_needs_user(self) -> MirroringSettings:
        if (self.source_username is None) != (self.source_password is None):
            raise ValueError("source_username and source_password go together")
        return self

    @property
    def enabled(self) -> bool:
        return self.source is not None or bool(self.upstreams)

    def all_upstreams(self) -> dict[str, UpstreamSettings]:
        """Every upstream by prefix, the classic `source` under ROOT (a merged namespace: the
        whole registry)."""
        found = dict(self.upstreams)
        if self.source is not None:
            found[ROOT] = UpstreamSettings(
                url=self.source,
                username=self.source_username,
                password=self.source_password,
                merged=True,
            )
        return found
