"""The authorizer: rules for users and groups, anonymous pull, own namespaces, deny by default."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from portside.auth import permissions
from portside.auth.base import Access, Identity, repository
from portside.auth.permissions import AccessConfig, Authorizer

CONFIG = """
anonymous_pull: ["public/*", "library/ubuntu"]
user_namespaces: true
groups:
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
    actions: ["*"]
  - repositories: ["docs/?"]
    authenticated: true
    actions: [pull]
  - repositories: ["team/releases"]
    users: [carol]
    groups: [release-managers]
    actions: [delete]
catalog:
  authenticated: false
  groups: [ci]
"""

ALICE = Identity("alice")
BOB = Identity("bob", frozenset({"release-managers"}))  # a group brought by the identity
CAROL = Identity("carol")
JENKINS = Identity("jenkins")
ADMIN = Identity("admin")
PULL_PUSH = ("pull", "push")
ALL3 = ("pull", "push", "delete")
CATALOG = Access("registry", "catalog", frozenset({"*"}))


@pytest.fixture(scope="module")
def authorizer() -> Authorizer:
    return Authorizer.from_data(yaml.safe_load(CONFIG))


@pytest.mark.parametrize(
    ("identity", "name", "requested", "granted"),
    [
        # rules for groups
        (ALICE, "team/app", PULL_PUSH, PULL_PUSH),
        (ALICE, "team/app/sub", ALL3, PULL_PUSH),
        (ALICE, "shared", ALL3, PULL_PUSH),
        (ALICE, "shared/x", PULL_PUSH, ()),
        (ALICE, "team", PULL_PUSH, ()),
        (JENKINS, "team/app", PULL_PUSH, ("pull",)),
        (JENKINS, "anything/at/all", ("pull",), ("pull",)),
        # rules for users, and a group the identity brings with it
        (ADMIN, "team/app", ALL3, ALL3),
        (ADMIN, "x", ("*",), ("*",)),
        (CAROL, "team/releases", ALL3, ("delete",)),
        (BOB, "team/releases", ALL3, ALL3),
        # every authenticated user; `?` is one character
        (CAROL, "docs/a", ("pull",), ("pull",)),
        (CAROL, "docs/ab", ("pull",), ()),
        # anonymous pull, and only pull
        (None, "public/app", PULL_PUSH, ("pull",)),
        (None, "public/a/b", ("pull",), ("pull",)),
        (None, "library/ubuntu", ALL3, ("pull",)),
        (None, "library/debian", ("pull",), ()),
        (CAROL, "public/app", PULL_PUSH, ("pull",)),
        # own namespaces
        (ALICE, "alice/app", ALL3, ALL3),
        (ALICE, "alice/a/b", ("*",), ("*",)),
        (ALICE, "alice", ("pull",), ()),
        (ALICE, "alicex/app", ("pull",), ()),
        (BOB, "alice/app", ("pull",), ()),
        # deny by default
        (CAROL, "team/app", PULL_PUSH, ()),
        (None, "team/app", ("pull",), ()),
        (Identity("mallory"), "x", ("pull",), ()),
    ],
)
def test_rules(
    authorizer: Authorizer,
    identity: Identity | None,
    name: str,
    requested: tuple[str, ...],
    granted: tuple[str, ...],
) -> None:
    assert authorizer.allowed(identity, repository(name, *requested)) == frozenset(granted)


@pytest.mark.parametrize(
    ("identity", "allowed"),
    [(JENKINS, True), (ADMIN, False), (None, False), (Identity("x", frozenset({"ci"})), True)],
)
def test_catalog(authorizer: Authorizer, identity: Identity | None, allowed: bool) -> None:
    assert authorizer.allowed(identity, CATALOG) == (CATALOG.actions if allowed else frozenset())


def test_catalog_defaults_to_authenticated_users() -> None:
    authorizer = Authorizer(AccessConfig())
    assert authorizer.allowed(ALICE, CATALOG) == {"*"}
    assert authorizer.allowed(None, CATALOG) == frozenset()
    anonymous = Authorizer.from_data({"catalog": {"anonymous": True}})
    assert anonymous.allowed(None, CATALOG) == {"*"}


def test_unknown_resources_are_denied(authorizer: Authorizer) -> None:
    assert authorizer.allowed(ADMIN, Access("registry", "other", frozenset({"*"}))) == frozenset()
    assert authorizer.allowed(ADMIN, Access("plugin", "x", frozenset({"pull"}))) == frozenset()


def test_empty_config_denies_everything() -> None:
    authorizer = Authorizer(AccessConfig())
    assert authorizer.allowed(ALICE, repository("alice/app", "pull")) == frozenset()
    assert authorizer.allowed(None, repository("a", "pull")) == frozenset()


def test_grant_cuts_down_and_drops(authorizer: Authorizer) -> None:
    requested = [repository("team/app", "pull", "push"), repository("docs/a", "pull", "push")]
    assert authorizer.grant(CAROL, requested) == [repository("docs/a", "pull")]


def test_identity_gets_configured_groups(authorizer: Authorizer) -> None:
    assert authorizer.identity("alice") == Identity("alice", frozenset({"developers"}))
    assert authorizer.groups_of("nobody") == frozenset()


@pytest.mark.parametrize(
    "data",
    [
        {"rules": [{"repositories": ["*"], "actions": ["pull"]}]},  # nobody named
        {"rules": [{"repositories": [], "users": ["a"], "actions": ["pull"]}]},
        {"rules": [{"repositories": ["*"], "users": ["a"], "actions": []}]},
        {"rules": [{"repositories": ["*"], "users": ["a"], "actions": ["read"]}]},
        {"rules": [{"repositories": [""], "users": ["a"], "actions": ["pull"]}]},
        {"rules": [{"repository": ["*"], "users": ["a"], "actions": ["pull"]}]},
        {"anonymous_pull": [" a"]},
        {"anonymus_pull": ["a"]},
    ],
)
def test_invalid_config(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Authorizer.from_data(data)


def test_docstring_example_is_valid() -> None:
    doc = permissions.__doc__
    assert doc is not None
    example = doc[doc.index("    access:") : doc.index("Patterns:")]
    Authorizer.from_data(yaml.safe_load(example)["access"])


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("*", "a/b/c", True),
        ("team/*", "team/a", True),
        ("team/*", "team", False),
        ("team/*", "teamx/a", False),
        ("a.b", "axb", False),
        ("a.b", "a.b", True),
        ("x?", "x/", True),
    ],
)
def test_patterns(pattern: str, name: str, matches: bool) -> None:
    assert bool(permissions.compile_pattern(pattern).fullmatch(name)) is matches
