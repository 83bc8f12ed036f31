"""Images pushed through the HTTP API for the UI's in-process tests: configs with labels,
annotations, indexes and referrers. A library, so no test_ prefix."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Final

import httpx

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
SIGNATURE: Final = "application/vnd.example.signature"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def push_blob(client: httpx.AsyncClient, name: str, data: bytes) -> dict[str, Any]:
    digest = digest_of(data)
    response = await client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data
    )
    assert response.status_code == 201, response.text
    return {"digest": digest, "size": len(data)}


async def push_manifest(
    client: httpx.AsyncClient, name: str, reference: str, document: dict[str, Any]
) -> str:
    body = json.dumps(document).encode()
    media_type = document["mediaType"]
    response = await client.put(
        f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
    )
    assert response.status_code == 201, response.text
    digest: str = response.headers["Docker-Content-Digest"]
    return digest


async def push_image(
    client: httpx.AsyncClient,
    name: str,
    tag: str | None,
    *,
    layer_size: int = 1000,
    architecture: str = "amd64",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> str:
    """An image of one random layer; its digest. Untagged (pushed by digest) when tag is None."""
    layer = await push_blob(client, name, os.urandom(layer_size))
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/true"], "Labels": labels or {}},
        "history": [{"created_by": "COPY data /"}],
    }
    config_descriptor = await push_blob(client, name, json.dumps(config).encode())
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **config_descriptor},
        "layers": [{"mediaType": OCI_LAYER, **layer}],
    }
    if annotations:
        document["annotations"] = annotations
    if tag is not None:
        return await push_manifest(client, name, tag, document)
    return await push_manifest(client, name, digest_of(json.dumps(document).encode()), document)


async def push_index(client: httpx.AsyncClient, name: str, tag: str) -> tuple[str, list[str]]:
    """An index of an amd64 and an arm64 image; its digest and theirs."""
    children = []
    for architecture in ("amd64", "arm64"):
        digest = await push_image(client, name, None, architecture=architecture)
        children.append(digest)
    manifests = []
    for digest, architecture in zip(children, ("amd64", "arm64"), strict=True):
        response = await client.get(f"/v2/{name}/manifests/{digest}")
        manifests.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(response.content),
                "platform": {"os": "linux", "architecture": architecture},
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return await push_manifest(client, name, tag, index), children


async def push_signature(client: httpx.AsyncClient, name: str, subject: str) -> str:
    """An artifact manifest whose subject is the given manifest: a signature."""
    response = await client.get(f"/v2/{name}/manifests/{subject}")
    empty = await push_blob(client, name, b"{}")
    payload = await push_blob(client, name, os.urandom(64))
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": [{"mediaType": "application/octet-stream", **payload}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(response.content)},
    }
    body = json.dumps(document).encode()
    return await push_manifest(client, name, digest_of(body), document)
