"""Who is asking and what for: `Identity`, `Access`, and the Docker token scope grammar.

Scope grammar (distribution's token specification, "Requesting a Token"):

    scope          := resourcescope [ ' ' resourcescope ]*
    resourcescope  := resourcetype ":" resourcename ":" action [ ',' action ]*
    resourcetype   := resourcetypevalue [ '(' resourcetypevalue ')' ]
    resourcename   := [ hostname '/' ] component [ '/' component ]*
    hostname       := hostcomponent [ '.' hostcomponent ]* [ ':' port-number ]

A resource name may hold a `:` (a hostname with a port), so a scope is split at its first `:`
(the type never has one) and its last (actions never have one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

PULL: Final = "pull"
PUSH: Final = "push"
DELETE: Final = "delete"
ALL: Final = "*"
ACTIONS: Final = frozenset({PULL, PUSH, DELETE, ALL})

REPOSITORY: Final = "repository"
REGISTRY: Final = "registry"
CATALOG: Final = "catalog"

# The order clients write actions in (`pull,push`); unknown ones follow, sorted.
_ACTION_ORDER: Final = {PULL: 0, PUSH: 1, DELETE: 2, ALL: 3}
_TYPE = re.compile(r"([a-z0-9]+)(?:\([a-z0-9]+\))?")
_ACTION = re.compile(r"[a-z]+|\*")


class AuthError(Exception):
    """Base of every error the auth layer raises on purpose."""


class InvalidScope(AuthError, ValueError):
    """A scope string that does not follow the grammar."""


@dataclass(frozen=True)
class Identity:
    """An authenticated user. Anonymous requests have no Identity (None), not an empty one.
    A robot account's (auth/robots.py) has its scopes: those, not the access rules, decide."""

    username: str
    groups: frozenset[str] = field(default_factory=frozenset)
    scopes: frozenset[Access] | None = None


def sorted_actions(actions: Iterable[str]) -> list[str]:
    return sorted(set(actions), key=lambda action: (_ACTION_ORDER.get(action, 9), action))


def granted_actions(granted: Iterable[str], requested: Iterable[str]) -> frozenset[str]:
    """The requested actions that `granted` covers; a granted `*` covers every action."""
    granted = frozenset(granted)
    requested = frozenset(requested)
    return requested if ALL in granted else requested & granted


@dataclass(frozen=True)
class Access:
    """Actions on one resource: `Access("repository", "team/app", frozenset({"pull"}))`."""

    type: str
    name: str
    actions: frozenset[str] = field(default_factory=frozenset)

    @property
    def scope(self) -> str:
        """This access as a scope string, `repository:team/app:pull,push`."""
        return f"{self.type}:{self.name}:{','.join(sorted_actions(self.actions))}"

    def with_actions(self, actions: Iterable[str]) -> Access:
        return Access(self.type, self.name, frozenset(actions))

    def to_claim(self) -> dict[str, object]:
        """The entry of a token's `access` claim."""
        return {"type": self.type, "name": self.name, "actions": sorted_actions(self.actions)}

    @classmethod
    def from_claim(cls, claim: Mapping[str, object]) -> Access:
        """An entry of a token's `access` claim; raises ValueError when it is not one."""
        type_, name, actions = claim.get("type"), claim.get("name"), claim.get("actions", [])
        if not isinstance(type_, str) or not isinstance(name, str):
            raise ValueError("access entry without a string type and name")
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise ValueError("access entry whose actions are not a list of strings")
        return cls(type_, name, frozenset(actions))


def repository(name: str, *actions: str) -> Access:
    return Access(REPOSITORY, name, frozenset(actions))


def parse_scope(scope: str) -> Access:
    """One resource scope: `repository:team/app:pull,push`, `registry:catalog:*`.

    A type's class (`repository(plugin)`) is dropped: access is decided per type and name."""
    type_, sep1, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    type_match = _TYPE.fullmatch(type_)
    if not (sep1 and sep2) or type_match is None or not name or any(c.isspace() for c in name):
        raise InvalidScope(f"not a scope of the form type:name:actions: {scope!r}")
    action_list = actions.split(",")
    if not all(_ACTION.fullmatch(action) for action in action_list):
        raise InvalidScope(f"invalid actions in scope {scope!r}")
    return Access(type_match.group(1), name, frozenset(action_list))


def parse_scopes(values: Iterable[str]) -> list[Access]:
    """Every scope in the token request's `scope` parameters (repeated, and each may hold
    several separated by spaces), merging the actions of repeated resources, in first-seen order."""
    merged: dict[tuple[str, str], set[str]] = {}
    for value in values:
        for part in value.split():
            access = parse_scope(part)
            merged.setdefault((access.type, access.name), set()).update(access.actions)
    return [Access(type_, name, frozenset(actions)) for (type_, name), actions in merged.items()]
