"""Building blocks for the spec suite: content, digests, and pushes through the HTTP API only.

A library, like distribution's testsuites, so no test_ prefix. Every push here asserts its own
success, so a test that uses one fails at the push, not later on a confusing 404.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# make_client(**settings) in conftest.py: a client on a fresh registry with those settings.
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]

# The OCI empty descriptor's content, `{}`, and its well-known digest (image-spec manifest.md).
EMPTY_JSON: Final = b"{}"
EMPTY_JSON_DIGEST: Final = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

# Types whose config and layers each flavour of image uses.
FLAVOURS: Final = {
    OCI_MANIFEST: (OCI_CONFIG, OCI_LAYER),
    DOCKER_MANIFEST: (DOCKER_CONFIG, DOCKER_LAYER),
}
INDEX_FOR: Final = {OCI_MANIFEST: OCI_INDEX, DOCKER_MANIFEST: DOCKER_LIST}


def random_bytes(size: int = 64) -> bytes:
    return os.urandom(size)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def unknown_digest() -> str:
    """A well-formed sha256 digest of content nobody pushed."""
    return digest_of(random_bytes(32))


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def to_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode()


def error_codes(response: httpx.Response) -> list[str]:
    """The codes of a spec error envelope, checking its shape on the way (spec "Error Codes")."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"errors"}, body
    assert isinstance(body["errors"], list), body
    assert body["errors"], body
    for error in body["errors"]:
        assert isinstance(error, dict), body
        assert set(error) <= {"code", "message", "detail"}, body
        # spec: "containing only uppercase alphabetic characters and underscores"
        assert error["code"].replace("_", "").isalpha(), body
        assert error["code"].isupper(), body
        assert isinstance(error.get("message", ""), str), body
    return [error["code"] for error in body["errors"]]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert error_codes(response) == [code]


async def push_blob(client: httpx.AsyncClient, name: str, data: bytes) -> str:
    """Push data monolithically with POST ?digest= (end-4b); return its digest."""
    digest = digest_of(data)
    response = await client.post(
        f"/v2/{name}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    return digest


async def start_upload(client: httpx.AsyncClient, name: str) -> str:
    """POST /v2/<name>/blobs/uploads/ (end-4a); return the upload's Location."""
    response = await client.post(f"/v2/{name}/blobs/uploads/", headers={"Content-Length": "0"})
    assert response.status_code == 202, response.text
    return response.headers["location"]


async def put_manifest(
    client: httpx.AsyncClient,
    name: str,
    reference: str,
    body: bytes,
    media_type: str | None,
) -> httpx.Response:
    """PUT /v2/<name>/manifests/<reference> (end-7), whatever the outcome."""
    headers = {} if media_type is None else {"Content-Type": media_type}
    return await client.put(f"/v2/{name}/manifests/{reference}", content=body, headers=headers)


@dataclass
class Pushed:
    """A manifest in the registry: its bytes, digest, media type and what it references."""

    body: bytes
    digest: str
    media_type: str
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.body)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def image_manifest(
    config: dict[str, Any],
    layers: list[dict[str, Any]],
    media_type: str = OCI_MANIFEST,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config,
        "layers": layers,
        **fields,
    }


async def push_manifest(
    client: httpx.AsyncClient,
    name: str,
    reference: str | None,
    document: dict[str, Any],
    blobs: dict[str, bytes] | None = None,
) -> Pushed:
    """PUT a manifest document by reference (default: its own digest) and check the 201."""
    body = to_json(document)
    media_type = document["mediaType"]
    digest = digest_of(body)
    response = await put_manifest(client, name, reference or digest, body, media_type)
    assert response.status_code == 201, response.text
    assert response.headers["docker-content-digest"] == digest
    return Pushed(body, digest, media_type, blobs or {})


async def push_image(
    client: httpx.AsyncClient,
    name: str,
    tag: str | None = "latest",
    media_type: str = OCI_MANIFEST,
    layers: int = 2,
    **fields: Any,
) -> Pushed:
    """Push a config and layers of random content, then an image manifest over them.

    fields go into the manifest as they are (subject, artifactType, annotations).
    """
    config_type, layer_type = FLAVOURS[media_type]
    config = to_json({"architecture": "amd64", "os": "linux", "nonce": random_bytes(8).hex()})
    blobs = {await push_blob(client, name, config): config}
    layer_descriptors = []
    for _ in range(layers):
        data = random_bytes(128)
        blobs[await push_blob(client, name, data)] = data
        layer_descriptors.append(descriptor(layer_type, data))
    document = image_manifest(
        descriptor(config_type, config), layer_descriptors, media_type, **fields
    )
    return await push_manifest(client, name, tag, document, blobs)


async def push_artifact(
    client: httpx.AsyncClient,
    name: str,
    artifact_type: str,
    subject: Pushed | dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    tag: str | None = None,
) -> Pushed:
    """An OCI 1.1 artifact: artifactType, the empty config, one layer; optionally a subject."""
    await push_blob(client, name, EMPTY_JSON)
    data = random_bytes(32)
    await push_blob(client, name, data)
    fields: dict[str, Any] = {"artifactType": artifact_type}
    if subject is not None:
        fields["subject"] = subject.descriptor() if isinstance(subject, Pushed) else subject
    if annotations is not None:
        fields["annotations"] = annotations
    document = image_manifest(
        descriptor(OCI_EMPTY, EMPTY_JSON),
        [descriptor("application/vnd.example.data", data)],
        **fields,
    )
    return await push_manifest(client, name, tag, document, {digest_of(data): data})


async def push_index(
    client: httpx.AsyncClient,
    name: str,
    children: list[Pushed],
    tag: str | None = "latest",
    media_type: str = OCI_INDEX,
    **fields: Any,
) -> Pushed:
    """Push an index (OCI) or manifest list (Docker) over manifests already in the repository."""
    platform = {"architecture": "amd64", "os": "linux"}
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [child.descriptor(platform=platform) for child in children],
        **fields,
    }
    return await push_manifest(client, name, tag, document)
