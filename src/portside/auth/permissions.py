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
from typing import Any

from portside.auth.base import (
    CATALOG,
    PULL,
    REGISTRY,
    REPOSITORY,
    Access,
    Identity,
    granted_actions,
)

# The section's shape lives with the rest of the settings, so that `portside config check`
# validates it; re-exported here, where its meaning is.
from portside.config.auth import AccessConfig as AccessConfig
from portside.config.auth import Action as Action
from portside.config.auth import CatalogAccess as CatalogAccess
from portside.config.auth import Rule as Rule
from portside.config.auth import Subjects as Subjects


def covers(subjects: Subjects, identity: Identity | None, groups: frozenset[str]) -> bool:
    """Whether `subjects` names `identity`, a member of `groups`."""
    if identity is None:
        return False
    return (
        subjects.authenticated
        or identity.username in subjects.users
        or bool(groups & set(subjects.groups))
    )


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
        if identity is not None and identity.scopes is not None:
            return self._robot(identity.scopes, access)
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
                if covers(rule, identity, groups) and _matches(patterns, access.name):
                    granted |= actions
        return granted_actions(granted, access.actions)

    def pulls_everything(self, identity: Identity | None) -> bool:
        """Whether identity (None: anonymous) may pull every repository: `anonymous_pull`, or a
        rule naming it, has the pattern `*` with pull. Registry-wide figures (the web UI's
        usage) are shown to those only, since they add up repositories others cannot see."""
        if "*" in self.config.anonymous_pull:
            return True
        if identity is None:
            return False
        groups = identity.groups | self.groups_of(identity.username)
        return any(
            "*" in rule.repositories
            and bool(granted_actions(actions, {PULL}))
            and covers(rule, identity, groups)
            for rule, _, actions in self._rules
        )

    def _robot(self, scopes: frozenset[Access], access: Access) -> frozenset[str]:
        """A robot's grants: its scopes (names may be patterns), plus what anyone may do."""
        granted = set(self.allowed(None, access))
        for scope in scopes:
            if scope.type == access.type and compile_pattern(scope.name).fullmatch(access.name):
                granted |= scope.actions
        return granted_actions(granted, access.actions)

    def _catalog(self, identity: Identity | None) -> bool:
        catalog = self.config.catalog
        if catalog.anonymous:
            return True
        if identity is None:
            return False
        return covers(catalog, identity, identity.groups | self.groups_of(identity.username))

    def grant(self, identity: Identity | None, requested: Iterable[Access]) -> list[Access]:
        """The requested accesses cut down to what is granted, those with nothing left dropped:
        the `access` claim of a token issued for this request."""
        granted = (access.with_actions(self.allowed(identity, access)) for access in requested)
        return [access for access in granted if access.actions]
