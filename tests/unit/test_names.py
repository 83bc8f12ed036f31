"""Repository names, tags and digests: the spec's grammar, table-driven."""

from __future__ import annotations

import hashlib

import pytest

from portside.registry.errors import DigestInvalid, NameInvalid
from portside.registry.names import Digest, is_tag, parse_name

SHA256 = "sha256:" + "a" * 64
SHA512 = "sha512:" + "b" * 128


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "library/ubuntu",
        "a/b/c/d",
        "my-repo",
        "my--repo",
        "my_repo",
        "my__repo",
        "my.repo",
        "0",
        "a" * 255,
        "ab/" + "c" * 252,
    ],
)
def test_valid_names_parse(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "Library/ubuntu",
        "/a",
        "a/",
        "a//b",
        "a/../b",
        "..",
        ".a",
        "a.",
        "a___b",
        "a_.b",
        "-a",
        "a-",
        "a b",
        "a%2fb",
        "a" * 256,
        "a\nb",
    ],
)
def test_invalid_names_are_name_invalid(name: str) -> None:
    with pytest.raises(NameInvalid):
        parse_name(name)


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("latest", True),
        ("v1.0.0", True),
        ("_private", True),
        ("A-b_c.d", True),
        ("a" * 128, True),
        ("a" * 129, False),
        (".hidden", False),
        ("-dash", False),
        ("", False),
        ("a/b", False),
        ("a:b", False),
    ],
)
def test_tag_grammar(tag: str, valid: bool) -> None:
    assert is_tag(tag) is valid


@pytest.mark.parametrize("value", [SHA256, SHA512])
def test_registered_digests_parse_and_print_back(value: str) -> None:
    assert str(Digest.parse(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        "sha256:",
        ":" + "a" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "sha256:" + "g" * 64,
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha256:" + "a" * 64 + "/../x",
        "SHA256:" + "a" * 64,
    ],
)
def test_bad_digests_are_digest_invalid(value: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(value)


def test_digest_of_content_matches_hashlib() -> None:
    data = b"portside"
    assert str(Digest.of(data)) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert str(Digest.of(data, "sha512")) == "sha512:" + hashlib.sha512(data).hexdigest()
