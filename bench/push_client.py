"""A small-image push client doing what docker and containerd do, with N pushes in flight.

Small images are latency-bound (seven requests per image), so an asyncio httpx client is fast
enough here, and using the same client for both registries keeps the comparison fair.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urljoin

import httpx
from images import OCI_MANIFEST, Blob, Image
from tools import BenchError, with_digest

REQUEST_TIMEOUT_S = 60.0


def expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code != status:
        raise BenchError(
            f"{what} answered {response.status_code}, expected {status}: {response.text[:200]}"
        )


async def push_blob(client: httpx.AsyncClient, repository: str, blob: Blob) -> None:
    """HEAD (skip if present), POST an upload, PUT ?digest= with the whole body."""
    head = await client.head(f"/v2/{repository}/blobs/{blob.digest}")
    if head.status_code == 200:
        return
    started = await client.post(f"/v2/{repository}/blobs/uploads/")
    expect(started, 202, "POST blob upload")
    location = urljoin(str(started.url), started.headers["location"])
    finished = await client.put(
        with_digest(location, blob.digest),
        content=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    )
    expect(finished, 201, "PUT blob upload")


async def push_image(client: httpx.AsyncClient, repository: str, tag: str, image: Image) -> None:
    for blob in image.blobs:
        await push_blob(client, repository, blob)
    response = await client.put(
        f"/v2/{repository}/manifests/{tag}",
        content=image.manifest.data,
        headers={"Content-Type": OCI_MANIFEST},
    )
    expect(response, 201, "PUT manifest")


async def push_all(
    base_url: str,
    repository: str,
    images: Sequence[Image],
    concurrency: int,
    authorization: str | None = None,
) -> None:
    """Push every image as `repository:t<index>`, `concurrency` at a time over kept-alive links."""
    pending = iter(enumerate(images))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT_S, headers=headers
    ) as client:

        async def worker() -> None:
            # One shared iterator: each worker takes the next image as soon as it is free.
            for index, image in pending:
                await push_image(client, repository, f"t{index}", image)

        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())


def push_images(
    base_url: str,
    repository: str,
    images: Sequence[Image],
    concurrency: int,
    authorization: str | None = None,
) -> None:
    try:
        asyncio.run(push_all(base_url, repository, images, concurrency, authorization))
    except ExceptionGroup as group:
        # TaskGroup wraps the first failure (and any sibling's): report that first one plainly.
        first = group.exceptions[0]
        if isinstance(first, BenchError):
            raise first from None
        raise BenchError(f"push failed: {first!r}") from None
