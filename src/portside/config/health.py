"""The `health` section: what GET /debug/health, /livez and /readyz check (the README's "Metrics
and health").

    health:
        drain_file: /run/portside/drain    # while it exists, /readyz answers 503
        min_free_space: 5GiB
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portside.config.sizes import parse_size

GiB = 1024**3


class HealthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    drain_file: Path | None = Field(
        default=None,
        description="While this file exists, GET /readyz answers 503, so that a load balancer "
        "sends new requests elsewhere; requests in progress (uploads too) go on. Null: "
        "never drained.",
    )
    min_free_space: int = Field(
        default=GiB,
        ge=0,
        description="Free space on the storage_path disk below which /debug/health fails, in "
        "bytes or with a unit (5GiB); 0: not checked. `storage: local` only.",
    )
    cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a worker reuses its last storage and database probe (a small "
        "object written, read and deleted; a query), so that frequent polls cost nothing.",
    )
    timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="A probe that takes longer fails.",
    )

    @field_validator("min_free_space", mode="before")
    @classmethod
    def _size_with_unit(cls, value: object) -> object:
        return parse_size(value)
