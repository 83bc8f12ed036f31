"""Repository names, tags and digests as the spec writes them: checked before they go into an
upstream URL, and digests checked against the bytes they name."""

from __future__ import annotations

import hashlib
import re
from typing import Final

_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST: Final = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_ENCODED: Final = {"sha256": re.compile(r"[a-f0-9]{64}"), "sha512": re.compile(r"[a-f0-9]{128}")}


def check_name(repository: str) -> str:
    if not NAME.fullmatch(repository):
        raise ValueError(f"not a repository name: {repository!r}")
    return repository


def check_reference(reference: str) -> str:
    """A tag or a digest."""
    if not (TAG.fullmatch(reference) or is_digest(reference)):
        raise ValueError(f"not a tag or digest: {reference!r}")
    return reference


def is_digest(value: str) -> bool:
    if not DIGEST.fullmatch(value):
        return False
    algorithm, _, encoded = value.partition(":")
    pattern = _ENCODED.get(algorithm)
    return pattern is None or pattern.fullmatch(encoded) is not None


def check_digest(digest: str) -> str:
    if not is_digest(digest):
        raise ValueError(f"not a digest: {digest!r}")
    return digest


def matches(digest: str, content: bytes) -> bool | None:
    """Whether content has this digest; None for an algorithm we cannot compute."""
    algorithm, _, encoded = digest.partition(":")
    if algorithm not in _ENCODED:
        return None
    return hashlib.new(algorithm, content).hexdigest() == encoded


def sha256_digest(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"
