"""The `policies` section: immutable tags, retention rules and quotas, reviewed like code.

    policies:
        immutable_tags:               # these tags, once pushed, are never moved nor deleted
            - repositories: ["*"]
              tags: ["v*"]            # glob patterns, or tag_regex
              tag_regex: '^v?\\d+\\.\\d+\\.\\d+$'
        retention:                    # the first rule naming a repository applies to it
            - repositories: ["ci/*"]
              keep_last: 10           # the 10 tags pushed last stay
              keep_tags: [latest, "release-*"]
              keep_pulled_within: 30d
              remove_older_than: 90d  # with keep_last: only those beyond it AND older
        quotas:                       # the first rule naming a namespace applies to it
            - namespaces: ["*"]       # each namespace on its own: its own usage
              max_bytes: 50GiB
              max_repositories: 100
              max_tags: 5000

Repository patterns are those of `auth.access`: `*` any run of characters (`/` too), `?` one.
A namespace is the first component of a repository name; names of one component are in the
namespace "". Rules are labelled in messages by `name`, else by their place (`quotas[0]`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from portside.config.durations import Duration
from portside.config.sizes import parse_size

Size = Annotated[int, BeforeValidator(parse_size)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        default=None, description="What messages and logs call the rule; none: its place."
    )


class ImmutableTagRule(_Rule):
    repositories: tuple[str, ...] = Field(
        default=("*",), min_length=1, description="Repository name patterns the rule covers."
    )
    tags: tuple[str, ...] = Field(
        default=(), description="Tag patterns (`v*`, `release-?`) that are immutable."
    )
    tag_regex: str | None = Field(
        default=None,
        description="A regular expression a whole tag matches to be immutable (a semver one).",
    )

    @field_validator("tag_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _names_tags(self) -> Self:
        if not self.tags and self.tag_regex is None:
            raise ValueError("an immutable_tags rule needs tags or tag_regex")
        return self


class RetentionRule(_Rule):
    repositories: tuple[str, ...] = Field(
        min_length=1, description="Repository name patterns the rule covers."
    )
    keep_last: int | None = Field(
        default=None, ge=0, description="Keep the tags pushed last, this many per repository."
    )
    keep_tags: tuple[str, ...] = Field(
        default=(), description="Tag patterns always kept (`latest`, `release-*`)."
    )
    keep_pulled_within: Duration | None = Field(
        default=None, description="Keep the tags pulled within this long (30d)."
    )
    remove_older_than: Duration | None = Field(
        default=None,
        description="Remove tags pushed longer ago than this (90d); with keep_last, only "
        "those beyond the last ones.",
    )

    @field_validator("keep_pulled_within", "remove_older_than")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("expected a duration above zero")
        return value

    @model_validator(mode="after")
    def _removes_something(self) -> Self:
        if self.keep_last is None and self.remove_older_than is None:
            raise ValueError("a retention rule needs keep_last or remove_older_than")
        return self


class QuotaRule(_Rule):
    namespaces: tuple[str, ...] = Field(
        min_length=1,
        description="Namespace patterns: each namespace the rule covers has its own quota.",
    )
    max_bytes: Size | None = Field(
        default=None,
        ge=0,
        description="Bytes stored in the namespace (each blob once, however many of its "
        "repositories hold it): 10GiB, 500MB.",
    )
    max_repositories: int | None = Field(
        default=None, ge=0, description="Repositories holding a manifest in the namespace."
    )
    max_tags: int | None = Field(default=None, ge=0, description="Tags in the namespace.")

    @model_validator(mode="after")
    def _limits_something(self) -> Self:
        if self.max_bytes is None and self.max_repositories is None and self.max_tags is None:
            raise ValueError("a quota needs max_bytes, max_repositories or max_tags")
        return self


class PoliciesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    immutable_tags: tuple[ImmutableTagRule, ...] = Field(
        default=(),
        description="Tags that cannot be moved or deleted once pushed (a push or DELETE gets "
        "DENIED naming the rule); retention never removes them.",
    )
    retention: tuple[RetentionRule, ...] = Field(
        default=(),
        description="Which tags garbage collection removes (`portside retention --dry-run` "
        "shows them); the first rule naming a repository applies.",
    )
    quotas: tuple[QuotaRule, ...] = Field(
        default=(),
        description="Limits per namespace; a push beyond one gets DENIED with the usage and "
        "the limit. The first rule naming a namespace applies.",
    )

    @property
    def enforced(self) -> bool:
        return bool(self.immutable_tags or self.retention or self.quotas)


def label(rule: _Rule, section: str, index: int) -> str:
    """How messages name a rule: its name, else its place in the section."""
    return rule.name or f"policies.{section}[{index}]"
