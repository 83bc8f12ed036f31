"""Docker token scopes: the grammar, table-driven, and Access's claim form."""

from __future__ import annotations

import pytest

from portside.auth.base import Access, InvalidScope, parse_scope, parse_scopes, repository


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("repository:samalba/my-app:pull,push", repository("samalba/my-app", "pull", "push")),
        ("repository:library/ubuntu:pull", repository("library/ubuntu", "pull")),
        ("repository:a:*", repository("a", "*")),
        ("repository:a:delete", repository("a", "delete")),
        ("registry:catalog:*", Access("registry", "catalog", frozenset({"*"}))),
        # a hostname with a port puts a `:` in the name: split from the right
        (
            "repository:localhost:5000/team/app:pull",
            repository("localhost:5000/team/app", "pull"),
        ),
        ("repository(plugin):vieux/sshfs:pull", repository("vieux/sshfs", "pull")),
        ("repository:a:pull,pull", repository("a", "pull")),
    ],
)
def test_valid_scopes(scope: str, expected: Access) -> None:
    assert parse_scope(scope) == expected


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "repository",
        "repository:a",
        "repository::pull",
        "repository:a:",
        "repository:a:pull,",
        "repository:a:PULL",
        ":a:pull",
        "Repository:a:pull",
        "repository(:a:pull",
        "repo sitory:a:pull",
    ],
)
def test_invalid_scopes(scope: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(scope)


def test_several_scope_parameters_merge() -> None:
    scopes = parse_scopes(
        ["repository:a:pull repository:b:pull", "repository:a:push", "registry:catalog:*"]
    )
    assert scopes == [
        repository("a", "pull", "push"),
        repository("b", "pull"),
        Access("registry", "catalog", frozenset({"*"})),
    ]


def test_scope_string_orders_actions_as_clients_do() -> None:
    assert repository("a/b", "delete", "push", "pull").scope == "repository:a/b:pull,push,delete"


def test_claim_round_trip() -> None:
    access = repository("a/b", "push", "pull")
    assert access.to_claim() == {"type": "repository", "name": "a/b", "actions": ["pull", "push"]}
    assert Access.from_claim(access.to_claim()) == access


@pytest.mark.parametrize(
    "claim",
    [{"name": "a"}, {"type": "repository", "name": 1}, {"type": "r", "name": "a", "actions": "x"}],
)
def test_bad_claims(claim: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="access entry"):
        Access.from_claim(claim)
