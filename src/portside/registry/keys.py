"""Where things live in the blob store. Only this module knows what a key means.

    blobs/<algorithm>/<first two of encoded>/<encoded>    a blob's bytes; manifests are blobs too
    uploads/<upload id>                                   an upload session's bytes so far
    uploads/<upload id>.<nonce>                           a whole blob being received (POST
                                                          ?digest=, PUT with the body, a cache
                                                          fill) until it is checked
    health/<probe id>                                     a health check's probe object, deleted
                                                          once read back

Blobs are content-addressed and stored once, whatever repositories link them; the links live in
metadata. The two-character fan-out keeps folders small on filesystems.
"""

from __future__ import annotations

import re
from typing import Final

from portside.registry.errors import DigestInvalid
from portside.registry.names import Digest

BLOBS: Final = "blobs"
UPLOADS: Final = "uploads"
HEALTH: Final = "health"
UPLOAD_ID_PATTERN: Final = re.compile(r"[0-9a-f]{32}")


def blob(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.encoded[:2]}/{digest.encoded}"


def upload(upload_id: str) -> str:
    if not UPLOAD_ID_PATTERN.fullmatch(upload_id):
        raise ValueError(f"not an upload id: {upload_id!r}")
    return f"{UPLOADS}/{upload_id}"


def upload_part(upload_id: str, nonce: str) -> str:
    if not UPLOAD_ID_PATTERN.fullmatch(nonce):
        raise ValueError(f"not a nonce: {nonce!r}")
    return f"{upload(upload_id)}.{nonce}"


def health_probe(probe_id: str) -> str:
    if not UPLOAD_ID_PATTERN.fullmatch(probe_id):
        raise ValueError(f"not a probe id: {probe_id!r}")
    return f"{HEALTH}/{probe_id}"


def blob_digest(key: str) -> Digest | None:
    """The digest whose bytes key holds, if key is where blob() puts them; else None."""
    prefix, _, rest = key.partition("/")
    algorithm, _, rest = rest.partition("/")
    fan_out, _, encoded = rest.partition("/")
    if prefix != BLOBS or fan_out != encoded[:2]:
        return None
    try:
        return Digest.parse(f"{algorithm}:{encoded}")
    except DigestInvalid:
        return None


def upload_of(key: str) -> str | None:
    """The upload id whose bytes or chunk key holds, if key is an upload() or upload_part()."""
    prefix, _, name = key.partition("/")
    upload_id = name.partition(".")[0]
    if prefix != UPLOADS or not UPLOAD_ID_PATTERN.fullmatch(upload_id):
        return None
    return upload_id
