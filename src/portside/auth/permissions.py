"""Who may pull, push and delete which repositories, decided from plain configuration data.

Nothing is allowed unless a rule allows it; rules only add. The data (`AccessConfig`), as YAML:

    access:
      anonymous_pull: ["public/*", "library/*"]  # anyone, logged in or not, may pull these
      user_namespaces: true                      # alice may do anything under alice/*
      groups:                                    # added to the groups an Identity brings
        developers: [alice, bob]
        ci: [jenkins]
      rules:
        - repositories: ["team/*", "shared"]
          groups: [developers]
          actions: [pull, push]
        - repositories: ["*"]
          groups: [ci]
          actions: [pull]
        - repositories: ["*"]
          users: [admin]
          actions: ["*"]                         # pull, push, delete, and any other action
        - repositories: ["*"]
          authenticated: true                    # every user who logged in
          actions: [pull]
      catalog:                                   # who gets `registry:catalog:*` (/v2/_catalog)
        authenticated: true                      # the default
        users: []
        groups: []
        anonymous: false

Patterns: `*` matches any run of characters, `/` included (`team/*` covers `team/a/b`), `?` one
character, anything else itself. A rule names at least one of `users`, `groups`, `authenticated`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portside.auth.base import (
    CATALOG,
    PULL,
    REGISTRY,
    REPOSITORY,
    Access,
    Identity,
    granted_actions,
)

Action = Literal["pull", "push", "delete", "*"]


def _check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        if not pattern or pattern != pattern.strip():
            raise ValueError(f"a repository pattern cannot be empty or padded: {pattern!r}")
    return patterns


class Subjects(BaseModel):
    """Whom something is granted to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[str, ...] = Field(default=(), description="Usernames.")
    groups: tuple[str, ...] = Field(default=(), description="Group names.")
    authenticated: bool = Field(default=False, description="Every user who logged in.")

    def covers(self, identity: Identity | None, groups: frozenset[str]) -> bool:
        if identity is None:
            return False
        return (
            self.authenticated or identity.username in self.users or bool(groups & set(self.groups))
        )


class Rule(Subjects):
    """Actions on the repositories matching any of `repositories`, for the subjects named."""

    repositories: tuple[str, ...] = Field(min_length=1, description="Repository name patterns.")
    actions: tuple[Action, ...] = Field(min_length=1, description="pull, push, delete or *.")

    _check = field_validator("repositories")(_check_patterns)

    @model_validator(mode="after")
    def _names_someone(self) -> Rule:
        if not (self.users or self.groups or self.authenticated):
            raise ValueError("a rule must name users, groups or `authenticated: true`")
        return self


class CatalogAccess(Subjects):
    """Who may list every repository name (`registry:catalog:*`)."""

    authenticated: bool = Field(default=True, description="Every user who logged in.")
    anonymous: bool = Field(default=False, description="Anyone, without logging in.")


class AccessConfig(BaseModel):
    """The `access` section: see the module docstring for its YAML form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anonymous_pull: tuple[str, ...] = Field(
        default=(), description="Repository patterns anyone may pull without logging in."
    )
    user_namespaces: bool = Field(
        default=False, description="Give each user every action under `<username>/*`."
    )
    groups: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Group name to the usernames in it."
    )
    rules: tuple[Rule, ...] = Field(default=(), description="Grants; they only add up.")
    catalog: CatalogAccess = Field(default_factory=CatalogAccess)

    _check = field_validator("anonymous_pull")(_check_patterns)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A repository name pattern as a regular expression for `fullmatch`."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _matches(patterns: Iterable[re.Pattern[str]], name: str) -> bool:
    return any(pattern.fullmatch(name) for pattern in patterns)


class Authorizer:
    """Decides the actions granted on a resource from an `AccessConfig`."""

    def __init__(self, config: AccessConfig) -> None:
        self.config = config
        self._anonymous = [compile_pattern(p) for p in config.anonymous_pull]
        self._rules = [
            (rule, [compile_pattern(p) for p in rule.repositories], frozenset(rule.actions))
            for rule in config.rules
        ]
        self._members: dict[str, set[str]] = {}
        for group, users in config.groups.items():
            for user in users:
                self._members.setdefault(user, set()).add(group)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Authorizer:
        """From the plain data of the `access` section; raises pydantic's ValidationError."""
        return cls(AccessConfig.model_validate(data))

    def groups_of(self, username: str) -> frozenset[str]:
        """The groups the configuration puts `username` in."""
        return frozenset(self._members.get(username, ()))

    def identity(self, username: str) -> Identity:
        """An Identity for `username` with its configured groups."""
        return Identity(username, self.groups_of(username))

    def allowed(self, identity: Identity | None, access: Access) -> frozenset[str]:
        """The subset of `access.actions` granted to `identity` (None: anonymous)."""
        if access.type == REGISTRY:
            if access.name == CATALOG and self._catalog(identity):
                return access.actions
            return frozenset()
        if access.type != REPOSITORY:
            return frozenset()
        granted: set[str] = set()
        if _matches(self._anonymous, access.name):
            granted.add(PULL)
        if identity is not None:
            if self.config.user_namespaces and access.name.startswith(identity.username + "/"):
                return access.actions
            groups = identity.groups | self.groups_of(identity.username)
            for rule, patterns, actions in self._rules:
                if rule.covers(identity, groups) and _matches(patterns, access.name):
                    granted |= actions
        return granted_actions(granted, access.actions)

    def _catalog(self, identity: Identity | None) -> bool:
        catalog = self.config.catalog
        if catalog.anonymous:
            return True
        if identity is None:
            return False
        return catalog.covers(identity, identity.groups | self.groups_of(identity.username))

    def grant(self, identity: Identity | None, requested: Iterable[Access]) -> list[Access]:
        """The requested accesses cut down to what is granted, those with nothing left dropped:
        the `access` claim of a token issued for this request."""
        granted = (access.with_actions(self.allowed(identity, access)) for access in requested)
        return [access for access in granted if access.actions]
