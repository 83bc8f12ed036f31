"""The `audit` section: who did what, when and from where, kept in the metadata database.

audit:
    retention: 90d      # entries older than this are pruned
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portside.config.durations import Duration


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="Keep the audit log; false: record nothing (as no section)."
    )
    retention: Duration = Field(
        default=timedelta(days=90),
        description="How long entries are kept (90d, 1w, 12h); older ones are pruned hourly.",
    )

    @field_validator("retention")
    @classmethod
    def _at_least_an_hour(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError("expected a retention of at least 1h")
        return value
