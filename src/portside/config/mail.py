"""The `email_exceptions` section: the classic registry's mail to an operator when a request
fails with an unhandled exception (a 500). Off until `smtp_host` is set, so the classic
sample's `_env:SMTP_HOST` with nothing set sends nothing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EmailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    smtp_host: str | None = Field(
        default=None, description="The SMTP server; null: no mail is sent."
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="Its port.")
    smtp_login: str | None = Field(
        default=None, description="User to log in to the SMTP server as; null: no login."
    )
    smtp_password: str | None = Field(default=None, description="Its password.")
    smtp_secure: bool = Field(
        default=False, description="Switch to TLS with STARTTLS before logging in."
    )
    from_addr: str = Field(
        default="docker-registry@localdomain.local", description="The mails' sender."
    )
    to_addr: tuple[str, ...] = Field(
        default=(), description="Who gets them: an address, or a list of addresses."
    )

    @model_validator(mode="before")
    @classmethod
    def _nulls_keep_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @field_validator("to_addr", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _complete(self) -> EmailSettings:
        if self.smtp_host is not None and not self.to_addr:
            raise ValueError("email_exceptions.smtp_host needs to_addr")
        if (self.smtp_login is None) != (self.smtp_password is None):
            raise ValueError("email_exceptions: smtp_login and smtp_password go together")
        return self

    @property
    def enabled(self) -> bool:
        return self.smtp_host is not None
