"""The `cors` section: the classic registry's Flask-CORS options, under their classic names.

    cors:
        origins: [https://ui.example.com]   # enables CORS; `*` is any origin
        methods: [GET, HEAD]
        headers: [Content-Type, Authorization]
        supports_credentials: true

The classic registry turned CORS on when `origins` was set and handed every key to Flask-CORS
as CORS_<KEY>; the defaults below are Flask-CORS's. A null key keeps its default, so the
classic sample's `_env:CORS_...` lines with nothing set leave CORS off.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_METHODS = ("GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE")


def _names(value: object) -> object:
    # Flask-CORS took a list, or one string of comma-separated names.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class CorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    origins: tuple[str, ...] = Field(
        default=(),
        description="Origins allowed to call the registry from a browser: `*`, or origins "
        "such as https://ui.example.com, each taken as a regular expression when it looks "
        "like one; none: CORS is off.",
    )
    methods: tuple[str, ...] = Field(
        default=DEFAULT_METHODS, description="Methods a preflight allows."
    )
    headers: tuple[str, ...] = Field(
        default=("*",), description="Request headers a preflight allows; `*`: any."
    )
    expose_headers: tuple[str, ...] = Field(
        default=(), description="Response headers the browser lets the page read."
    )
    supports_credentials: bool = Field(
        default=False,
        description="Let pages send cookies and Authorization (Access-Control-Allow-Credentials).",
    )
    max_age: int | None = Field(
        default=None, ge=0, description="Seconds a browser may cache a preflight's answer."
    )
    send_wildcard: bool = Field(
        default=False,
        description="With origins `*` and no credentials, answer `*` rather than the "
        "request's origin.",
    )
    always_send: bool = Field(
        default=True,
        description="Send the CORS headers on responses to requests without an Origin header "
        "too (with origins `*`).",
    )
    automatic_options: bool = Field(
        default=True,
        description="Answer preflight OPTIONS requests here, before authentication; false: "
        "they go to the registry like other requests.",
    )
    vary_header: bool = Field(
        default=True,
        description="Accepted for the classic registry: `Vary: Origin` is always sent when "
        "the answer depends on the origin, as caches need.",
    )
    resources: tuple[str, ...] = Field(
        default=(r"/*",),
        description="Regular expressions of the paths CORS applies to (matched from the "
        "start of the path); default every path.",
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_keep_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @field_validator("origins", "methods", "headers", "expose_headers", mode="before")
    @classmethod
    def _list_or_string(cls, value: object) -> object:
        return _names(value)

    @field_validator("resources", mode="before")
    @classmethod
    def _patterns(cls, value: object) -> object:
        if isinstance(value, dict):
            raise ValueError(
                "per-resource options are not supported: give the path patterns as a list"
            )
        return (value,) if isinstance(value, str) else value

    @field_validator("origins", "resources")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if pattern != "*":
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(method.upper() for method in value)

    @property
    def enabled(self) -> bool:
        return bool(self.origins)
