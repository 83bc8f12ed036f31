"""The client of other registries, for the pull-through cache: one `Upstream` per upstream
registry, pull-only, over HTTP/1.1 with pooled connections.

    upstream = Upstream("https://registry-1.docker.io", username=..., password=...,
                        allowed_realm_hosts=["auth.docker.io"])
    info = await upstream.head_manifest("library/alpine", "3.20", accept)  # ManifestInfo
    manifest = await upstream.get_manifest("library/alpine", info.digest, accept)
    async with upstream.open_blob("library/alpine", digest) as blob:       # BlobStream
        async for chunk in blob: ...                                         # blob.size
    index = await upstream.referrers("library/alpine", digest, artifact_type)  # None: no API
    names = await upstream.tags("library/alpine")
    upstream.available, upstream.last_error                                  # health
    await upstream.aclose()

Names, tags and digests must be valid (ValueError otherwise): the caller maps its own names to
the upstream's (`library/` on Docker Hub included). `accept` defaults to DEFAULT_ACCEPT (OCI
index and manifest, Docker manifest list and schema 2); pass the client's list through.

What comes back is checked: ManifestInfo has the digest, media type and size from
Docker-Content-Digest, Content-Type and Content-Length; a FetchedManifest's digest is verified
against its bytes (the reference's, if that is a digest; else the header's; else sha256 of the
bytes). Manifests and referrers indexes are read to MANIFEST_LIMIT (4 MiB) at most. Blob bytes
stream in chunks with a read timeout between chunks, not a total one; their digest is the caller's
to verify. Blob redirects (307 to object storage) are followed without our credentials.

Errors (errors.py), all UpstreamError:

    UpstreamUnavailable  connect error, timeout, 5xx, 429 (retry_after from Retry-After), or the
                         circuit open (retry_after: until the trial call)
    UpstreamNotFound     404, or MANIFEST_UNKNOWN / BLOB_UNKNOWN / NAME_UNKNOWN
    UpstreamDenied       401 or 403 after authenticating as configured
    UpstreamInvalid      a protocol violation: digest mismatch, oversized manifest, bad challenge,
                         token or redirect, another unexpected status

Auth: anonymous first; on 401, Basic sends the configured credentials (to the upstream's own
origin only); Bearer fetches a token for `repository:<name>:pull` from the realm and caches it per
scope until shortly before `expires_in` (60 s if not given). The realm sees the credentials only if
it is on the upstream's origin or in `allowed_realm_hosts` (tokens.py); else it is asked
anonymously.

Circuit breaker: after `failure_threshold` consecutive UpstreamUnavailable, calls fail at once for
`open_seconds`, then one trial call decides (breaker.py). Other errors mean the upstream answered.
"""

from portside.upstream.client import (
    DEFAULT_ACCEPT,
    MANIFEST_LIMIT,
    BlobStream,
    FetchedManifest,
    ManifestInfo,
    Upstream,
)
from portside.upstream.errors import (
    UpstreamDenied,
    UpstreamError,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)

__all__ = [
    "DEFAULT_ACCEPT",
    "MANIFEST_LIMIT",
    "BlobStream",
    "FetchedManifest",
    "ManifestInfo",
    "Upstream",
    "UpstreamDenied",
    "UpstreamError",
    "UpstreamInvalid",
    "UpstreamNotFound",
    "UpstreamUnavailable",
]
