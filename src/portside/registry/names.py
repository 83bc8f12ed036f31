"""Repository names, tags and digests: parsed and checked once at the edge, then passed typed.

Grammar from the OCI distribution spec ("Pulling manifests"):
    <name>  [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*
    <tag>   [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
    digest  algorithm ":" encoded, with the registered algorithms' encodings checked exactly
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from portside.registry.errors import DigestInvalid, NameInvalid

NAME_PATTERN: Final = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
# Clients join host, port and name into one reference; 255 is where they stop (spec, distribution).
NAME_MAX_LENGTH: Final = 255
TAG_PATTERN: Final = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_PATTERN: Final = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# The registered algorithms and the exact encodings of their digests (image-spec descriptor.md).
ALGORITHMS: Final = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}


def parse_name(value: str) -> str:
    """A repository name, or NameInvalid."""
    if len(value) > NAME_MAX_LENGTH or not NAME_PATTERN.fullmatch(value):
        raise NameInvalid({"name": value[:NAME_MAX_LENGTH]})
    return value


def is_tag(value: str) -> bool:
    return TAG_PATTERN.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Digest:
    """A content digest of a registered algorithm, e.g. `sha256:<64 hex>`."""

    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, value: str) -> Digest:
        """A digest of sha256 or sha512; DigestInvalid for anything else, checked before any I/O."""
        algorithm, sep, encoded = value.partition(":")
        if not sep or not DIGEST_PATTERN.fullmatch(value):
            raise DigestInvalid({"digest": value[:200], "reason": "not a digest"})
        pattern = ALGORITHMS.get(algorithm)
        if pattern is None:
            reason = f"unsupported algorithm {algorithm}"
            raise DigestInvalid({"digest": value[:200], "reason": reason})
        if not pattern.fullmatch(encoded):
            raise DigestInvalid({"digest": value[:200], "reason": f"bad {algorithm} encoding"})
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"
