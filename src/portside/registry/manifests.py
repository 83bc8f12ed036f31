"""Manifest media types and parsing: what a manifest references, its subject and artifact type.

Parsing checks structure only as far as the registry relies on it (descriptors it must resolve);
everything else in the document is the client's and is stored byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from portside.metadata.base import ARTIFACT_TYPE_MAX, Reference, ReferenceKind
from portside.registry.errors import ManifestInvalid
from portside.registry.names import Digest

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES: Final = IMAGE_TYPES | INDEX_TYPES
# Layers a registry does not serve: their bytes come from `urls`, so they need not be pushed.
FOREIGN_LAYER_TYPES: Final = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)
# The annotation (of a manifest) or label (of an image config) that search shows.
DESCRIPTION: Final = "org.opencontainers.image.description"
# A search result's summary, not a document: longer descriptions are cut to this many characters.
DESCRIPTION_MAX: Final = 1024


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    media_type: str
    references: Sequence[Reference]
    subject: str | None
    artifact_type: str | None
    annotations: str | None
    # The manifest's own description annotation, if it has one.
    description: str | None = None
    # An image manifest's config descriptor, where the description label may be instead.
    config_digest: str | None = None
    config_size: int = 0


# A UTF-16 surrogate on its own: JSON can spell one (`"\ud800"`) and Python's parser decodes it,
# but it is no Unicode text, and UTF-8 (a database, a response body) has no encoding for it.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# The same, as ASCII-only JSON text spells it (how annotations are kept).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _is_text(value: str) -> bool:
    return value.isascii() or _SURROGATE.search(value) is None


def _shown(value: str, limit: int = 200) -> str:
    """value made fit for an error's detail: lone surrogates as `\\udXXX`, cut to limit."""
    return value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _check_text(document: object) -> None:
    """ManifestInvalid naming the first string of the document, key or value at any depth, that
    is not Unicode text (a lone surrogate). Iterative: a document nests as deep as the parser
    let it, deeper than a recursive walk may go."""
    pending: list[tuple[object, str]] = [(document, "")]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str):
            if not _is_text(value):
                reason = "a string that is not Unicode text (a lone UTF-16 surrogate)"
                raise ManifestInvalid({"field": _shown(where) or "(document)", "reason": reason})
        elif isinstance(value, dict):
            items = list(value.items())
            for key, item in reversed(items):
                path = f"{where}.{key}" if where else key
                if not _is_text(key):
                    reason = "a key that is not Unicode text (a lone UTF-16 surrogate)"
                    raise ManifestInvalid({"field": _shown(path), "reason": reason})
                pending.append((item, path))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]") for i, item in reversed(list(enumerate(value))))


def _as_text(value: object) -> object:
    """value with every lone surrogate in its strings (keys too) replaced by U+FFFD."""
    if isinstance(value, str):
        if _is_text(value):
            return value
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_as_text(key): _as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_text(item) for item in value]
    return value


def annotations_as_text(annotations: str | None) -> str | None:
    """Stored annotations (JSON text) that decode to Unicode text only, for listings: a referrer
    stored before lone surrogates were refused must not break the list of its subject. None for
    text that is not a JSON object."""
    if annotations is None or _SURROGATE_ESCAPE.search(annotations) is None:
        return annotations
    try:
        document = json.loads(annotations)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    return json.dumps(_as_text(document), separators=(",", ":"))


def _descriptor(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where}: expected a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}: mediaType must be a non-empty string")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: digest must be a string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}: size must be a non-negative integer")
    try:
        Digest.parse(digest)
    except Exception as error:
        raise ManifestInvalid(f"{where}: invalid digest {digest[:200]!r}") from error
    return value


def _descriptors(document: dict[str, Any], field: str) -> list[dict[str, Any]]:
    items = document.get(field)
    if not isinstance(items, list):
        raise ManifestInvalid(f"{field} must be a list")
    return [_descriptor(item, f"{field}[{i}]") for i, item in enumerate(items)]


def _storable(value: str, field: str, limit: int) -> str:
    """value, if a database keeps it whole: no NUL (PostgreSQL text refuses one), at most limit
    characters (the column's length); else ManifestInvalid naming the field."""
    if "\x00" in value:
        raise ManifestInvalid({"field": field, "reason": "contains a NUL character"})
    if len(value) > limit:
        raise ManifestInvalid({"field": field, "reason": f"longer than {limit} characters"})
    return value


def _optional_string(document: dict[str, Any], field: str) -> str | None:
    value = document.get(field)
    if value is not None and not isinstance(value, str):
        raise ManifestInvalid(f"{field} must be a string")
    return value


def _description(values: object) -> str | None:
    """The description among annotations or labels, if it is a string with some text."""
    value = values.get(DESCRIPTION) if isinstance(values, dict) else None
    if not isinstance(value, str):
        return None
    # JSON carries what a database or UTF-8 refuses: NUL (PostgreSQL text), lone surrogates.
    text = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
    return text[:DESCRIPTION_MAX] or None


def config_description(content: bytes) -> str | None:
    """The description label of an image config (`config.Labels`, in OCI and Docker configs
    alike); None when it has none or is not JSON: a config is the client's, never refused."""
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    config = document.get("config") if isinstance(document, dict) else None
    return _description(config.get("Labels") if isinstance(config, dict) else None)


def parse(body: bytes, content_type: str | None) -> ParsedManifest:
    """Parse a pushed manifest; ManifestInvalid for anything the registry cannot store faithfully.

    The media type is the document's `mediaType`, else the request's Content-Type; when both are
    given they must agree (spec: the Content-Type "MUST match the media type of the manifest").
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise ManifestInvalid(f"not JSON: {error}") from None
    except RecursionError:
        # A body within the size limit can still nest deeper than the parser recurses.
        raise ManifestInvalid("not JSON: nested too deeply") from None
    if not isinstance(document, dict):
        raise ManifestInvalid("a manifest is a JSON object")
    _check_text(document)
    declared = _optional_string(document, "mediaType")
    content_type = (content_type or "").partition(";")[0].strip() or None
    if declared and content_type and declared != content_type:
        raise ManifestInvalid(f"mediaType {declared} does not match Content-Type {content_type}")
    media_type = declared or content_type
    if media_type not in MANIFEST_TYPES:
        raise ManifestInvalid(f"unsupported manifest media type {media_type!r}")
    schema_version = document.get("schemaVersion")
    # An integer 2: not 2.0 nor true, which compare equal in Python but not in Go's decoder.
    if type(schema_version) is not int or schema_version != 2:
        raise ManifestInvalid("schemaVersion must be 2")

    references: list[Reference] = []
    artifact_type, artifact_field = _optional_string(document, "artifactType"), "artifactType"
    config: dict[str, Any] | None = None
    if media_type in IMAGE_TYPES:
        config = _descriptor(document.get("config"), "config")
        references.append(Reference(config["digest"], ReferenceKind.BLOB))
        for layer in _descriptors(document, "layers"):
            if layer["mediaType"] in FOREIGN_LAYER_TYPES and layer.get("urls"):
                continue
            references.append(Reference(layer["digest"], ReferenceKind.BLOB))
        # spec, listing referrers: "If the artifactType is empty or missing in an image manifest,
        # the value of artifactType MUST be set to the config descriptor mediaType value."
        if not artifact_type:
            artifact_type, artifact_field = config["mediaType"], "config.mediaType"
    else:
        for child in _descriptors(document, "manifests"):
            references.append(Reference(child["digest"], ReferenceKind.MANIFEST))

    if artifact_type:  # what referrers list and filter by: kept whole, or refused
        _storable(artifact_type, artifact_field, ARTIFACT_TYPE_MAX)
    subject = document.get("subject")
    subject_digest = None if subject is None else _descriptor(subject, "subject")["digest"]
    annotations = document.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise ManifestInvalid("annotations must be an object")
    return ParsedManifest(
        media_type=media_type,
        references=references,
        subject=subject_digest,
        artifact_type=artifact_type,
        annotations=json.dumps(annotations, separators=(",", ":")) if annotations else None,
        description=_description(annotations),
        config_digest=None if config is None else config["digest"],
        config_size=0 if config is None else config["size"],
    )
