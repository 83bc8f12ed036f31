"""The `ui` section: the web UI at /ui/ (api/ui/).

ui:
    enabled: true
    session_lifetime: 12h   # a login lasts this long
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portside.config.durations import Duration


class UiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Serve the web UI at /ui/ (a browser asking for / is sent there); false: "
        "no UI, / answers the banner to everyone.",
    )
    session_lifetime: Duration = Field(
        default=timedelta(hours=12),
        description="How long a login to the web UI lasts (5m to 30d).",
    )

    @field_validator("session_lifetime")
    @classmethod
    def _reasonable(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=5) <= value <= timedelta(days=30):
            raise ValueError("expected a session_lifetime from 5m to 30d")
        return value
