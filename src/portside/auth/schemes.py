"""The password hashes `portside user` writes, apart from htpasswd.py so that the CLI offers them
without loading passlib."""

from __future__ import annotations

from enum import StrEnum


class Scheme(StrEnum):
    """How `hash_password` hashes; named like the `htpasswd` flag that writes the same format."""

    BCRYPT = "bcrypt"  # -B
    SHA512 = "sha512"  # -5
    SHA256 = "sha256"  # -2
    MD5 = "md5"  # -m ($apr1$)
    SHA1 = "sha1"  # -s ({SHA})
    CRYPT = "crypt"  # -d (DES)
    PLAIN = "plain"  # -p
