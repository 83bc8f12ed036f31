"""The spec's error codes, one exception class per code; server/errors.py chooses HTTP statuses.

RegistryError
├── BlobUnknown            BLOB_UNKNOWN
├── BlobUploadInvalid      BLOB_UPLOAD_INVALID
│   └── UploadOutOfOrder       a chunk not starting where the upload ends (416)
├── BlobUploadUnknown      BLOB_UPLOAD_UNKNOWN
├── DigestInvalid          DIGEST_INVALID
├── ManifestBlobUnknown    MANIFEST_BLOB_UNKNOWN
├── ManifestInvalid        MANIFEST_INVALID
├── ManifestUnknown        MANIFEST_UNKNOWN
├── NameInvalid            NAME_INVALID
├── NameUnknown            NAME_UNKNOWN
├── SizeInvalid            SIZE_INVALID
│   └── TooLarge               a body over a configured limit (413)
├── Unauthorized           UNAUTHORIZED
├── Denied                 DENIED
│   └── PolicyDenied           an immutable tag or a quota: the message names the rule
├── Unsupported            UNSUPPORTED
│   ├── DeleteDisabled         DELETE with deletes switched off (405)
│   ├── TokenRequestInvalid    a token request the token endpoint cannot serve (400)
│   └── QueryInvalid           a query parameter given twice, or otherwise unusable (400)
├── TooManyRequests        TOOMANYREQUESTS
├── InsufficientStorage    UNKNOWN (distribution's code for the registry's own failures): a full
│                          disk or quota (507)
├── UpstreamUnavailable    UNAVAILABLE: a cache's upstream failed, and nothing cached serves (503)
└── PaginationNumberInvalid  PAGINATION_NUMBER_INVALID (distribution's code for a bad `n`)
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    """The "Error Codes" table of the OCI distribution spec (code-1 to code-14)."""

    BLOB_UNKNOWN = "BLOB_UNKNOWN"
    BLOB_UPLOAD_INVALID = "BLOB_UPLOAD_INVALID"
    BLOB_UPLOAD_UNKNOWN = "BLOB_UPLOAD_UNKNOWN"
    DIGEST_INVALID = "DIGEST_INVALID"
    MANIFEST_BLOB_UNKNOWN = "MANIFEST_BLOB_UNKNOWN"
    MANIFEST_INVALID = "MANIFEST_INVALID"
    MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
    NAME_INVALID = "NAME_INVALID"
    NAME_UNKNOWN = "NAME_UNKNOWN"
    SIZE_INVALID = "SIZE_INVALID"
    UNAUTHORIZED = "UNAUTHORIZED"
    DENIED = "DENIED"
    UNSUPPORTED = "UNSUPPORTED"
    TOOMANYREQUESTS = "TOOMANYREQUESTS"
    # Beyond the spec's table, whose 14 codes "MUST" be the only ones: none of them says "bad
    # `n`", and distribution's clients know this one (distribution answers it since 2.x).
    PAGINATION_NUMBER_INVALID = "PAGINATION_NUMBER_INVALID"
    # Nor has the table a code for the registry's own failures; distribution answers them with
    # UNKNOWN ("unknown error"), and so does a full disk here (InsufficientStorage, 507).
    UNKNOWN = "UNKNOWN"
    # distribution's code for a service it depends on being down (503): here, a cache's upstream.
    UNAVAILABLE = "UNAVAILABLE"


class RegistryError(Exception):
    """A failure the client can act on, reported in the spec's JSON envelope."""

    code: ClassVar[ErrorCode]
    message: ClassVar[str]

    def __init__(self, detail: object = None) -> None:
        super().__init__(self.message if detail is None else f"{self.message}: {detail}")
        self.detail = detail

    def describe(self) -> str:
        """The envelope's message: the code's, unless the error says more."""
        return self.message


class BlobUnknown(RegistryError):
    code = ErrorCode.BLOB_UNKNOWN
    message = "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code = ErrorCode.BLOB_UPLOAD_INVALID
    message = "blob upload invalid"


class UploadOutOfOrder(BlobUploadInvalid):
    """A chunk that does not start where the upload ends (the spec says 416)."""


class BlobUploadUnknown(RegistryError):
    code = ErrorCode.BLOB_UPLOAD_UNKNOWN
    message = "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    code = ErrorCode.DIGEST_INVALID
    message = "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code = ErrorCode.MANIFEST_BLOB_UNKNOWN
    message = "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    code = ErrorCode.MANIFEST_INVALID
    message = "manifest invalid"


class ManifestUnknown(RegistryError):
    code = ErrorCode.MANIFEST_UNKNOWN
    message = "manifest unknown to registry"


class NameInvalid(RegistryError):
    code = ErrorCode.NAME_INVALID
    message = "invalid repository name"


class NameUnknown(RegistryError):
    code = ErrorCode.NAME_UNKNOWN
    message = "repository name not known to registry"


class SizeInvalid(RegistryError):
    code = ErrorCode.SIZE_INVALID
    message = "provided length did not match content length"


class TooLarge(SizeInvalid):
    """A body over a configured limit (413 Payload Too Large)."""

    message = "content exceeds the registry's size limit"


class Unauthorized(RegistryError):
    """No credentials, bad ones, or a token without the scope: `challenge` tells the client
    how to authenticate (the WWW-Authenticate value)."""

    code = ErrorCode.UNAUTHORIZED
    message = "authentication required"

    def __init__(self, detail: object = None, *, challenge: str | None = None) -> None:
        super().__init__(detail)
        self.challenge = challenge


class Denied(RegistryError):
    code = ErrorCode.DENIED
    message = "requested access to the resource is denied"


class PolicyDenied(Denied):
    """A push or delete a policy refuses: an immutable tag, a quota. Its message says which
    rule, and the usage and the limit, since clients show the message and little else."""

    def __init__(self, reason: str, detail: object = None) -> None:
        super().__init__(detail)
        self.reason = reason

    def describe(self) -> str:
        return self.reason


class Unsupported(RegistryError):
    code = ErrorCode.UNSUPPORTED
    message = "the operation is unsupported"


class DeleteDisabled(Unsupported):
    """DELETE while deletes are switched off in config (the spec says 405)."""

    message = "deletes are disabled on this registry"


class TokenRequestInvalid(Unsupported):
    """A token request the token endpoint cannot serve: a malformed scope, another service,
    an unknown grant_type (400, as OAuth2's invalid_request)."""

    message = "invalid token request"


class QueryInvalid(Unsupported):
    """A query parameter the registry cannot act on, such as one given twice (400): the spec's
    codes have none for it, and UNSUPPORTED is what distribution answers a bad request with."""

    message = "invalid query parameter"


class TooManyRequests(RegistryError):
    code = ErrorCode.TOOMANYREQUESTS
    message = "too many requests"

    def __init__(self, detail: object = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after  # seconds, for Retry-After


class InsufficientStorage(RegistryError):
    """The registry's disk is full, or its quota reached (blob storage or the database): a push
    cannot be kept until space is freed; reads go on (507 Insufficient Storage, RFC 4918)."""

    code = ErrorCode.UNKNOWN
    message = "insufficient storage: the registry has no space left to keep this; try again later"


class PaginationNumberInvalid(RegistryError):
    code = ErrorCode.PAGINATION_NUMBER_INVALID
    message = "invalid number of results requested"


class UpstreamUnavailable(RegistryError):
    """A pull-through cache's upstream is down, slow, refusing (429, 5xx) or sending what does
    not verify, and the registry has no cached copy to serve instead (503, Retry-After when the
    upstream gave one)."""

    code = ErrorCode.UNAVAILABLE
    message = "the upstream registry is unavailable and nothing cached can serve this"

    def __init__(self, detail: object = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after  # seconds, for Retry-After
