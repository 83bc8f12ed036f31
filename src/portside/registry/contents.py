"""What a manifest and an image config say, read for people: layers, platforms, subject,
annotations; entrypoint, command, environment, labels, exposed ports, history.

Stored documents are the clients': anything may be missing or of the wrong type, so reading
never fails; what cannot be read is left out. Values are plain strings for templates to escape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from portside.registry.manifests import INDEX_TYPES


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int | None
    platform: str | None = None  # os/architecture[/variant], for an index's children
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ManifestContent:
    """An image manifest's config and layers, or an index's children; either's subject."""

    is_index: bool
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created: str | None
    created_by: str | None
    comment: str | None
    empty_layer: bool


@dataclass(frozen=True, slots=True)
class ImageConfig:
    platform: str | None
    created: str | None = None
    user: str | None = None
    working_dir: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _strings(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item if isinstance(item, str) else json.dumps(item) for item in value)
    return (json.dumps(value),)


def _mapping(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): _text(item) or "" for key, item in value.items()}


def _object(document: Any, key: str) -> dict[str, Any]:
    found = document.get(key) if isinstance(document, dict) else None
    return found if isinstance(found, dict) else {}


def platform(value: Any) -> str | None:
    """os/architecture[/variant] of an OCI platform object (or an image config)."""
    if not isinstance(value, dict):
        return None
    parts = [value.get("os"), value.get("architecture"), value.get("variant")]
    shown = [part for part in parts if isinstance(part, str) and part]
    return "/".join(shown) or None


def _descriptor(value: Any) -> Descriptor | None:
    if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
        return None
    size = value.get("size")
    return Descriptor(
        media_type=_text(value.get("mediaType")) or "",
        digest=value["digest"],
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        platform=platform(value.get("platform")),
        artifact_type=_text(value.get("artifactType")),
        annotations=_mapping(value.get("annotations")),
    )


def _descriptors(value: Any) -> tuple[Descriptor, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(found for item in value if (found := _descriptor(item)) is not None)


def _document(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def read_manifest(content: bytes, media_type: str) -> ManifestContent:
    document = _document(content)
    if not isinstance(document, dict):
        return ManifestContent(is_index=media_type in INDEX_TYPES)
    is_index = media_type in INDEX_TYPES
    return ManifestContent(
        is_index=is_index,
        config=None if is_index else _descriptor(document.get("config")),
        layers=() if is_index else _descriptors(document.get("layers")),
        children=_descriptors(document.get("manifests")) if is_index else (),
        subject=_descriptor(document.get("subject")),
        artifact_type=_text(document.get("artifactType")),
        annotations=_mapping(document.get("annotations")),
    )


def _history(value: Any) -> tuple[HistoryEntry, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        HistoryEntry(
            created=_text(item.get("created")),
            created_by=_text(item.get("created_by")),
            comment=_text(item.get("comment")),
            empty_layer=item.get("empty_layer") is True,
        )
        for item in value
        if isinstance(item, dict)
    )


def read_config(content: bytes) -> ImageConfig | None:
    """An image config (OCI or Docker); None for what is not a JSON object."""
    document = _document(content)
    if not isinstance(document, dict):
        return None
    runtime = _object(document, "config")
    return ImageConfig(
        platform=platform(document),
        created=_text(document.get("created")),
        user=_text(runtime.get("User")) or None,
        working_dir=_text(runtime.get("WorkingDir")) or None,
        entrypoint=_strings(runtime.get("Entrypoint")),
        cmd=_strings(runtime.get("Cmd")),
        env=_strings(runtime.get("Env")) or (),
        labels=_mapping(runtime.get("Labels")),
        exposed_ports=tuple(sorted(_mapping(runtime.get("ExposedPorts")))),
        history=_history(document.get("history")),
    )
