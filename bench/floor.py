"""The floor under the blob rows (`--floor`): the least that any registry served by granian must do
with a blob, and nothing else, so that its ratio to distribution bounds what Portside can reach.

Uploads are hashed and written as Portside does it at its fastest (4 MiB batches, hashed in one
thread and written in another while the next batch arrives), made durable where Portside's
promise needs it (each PATCH synced before its 202, as an acknowledged chunk must survive a
crash; a finished blob synced, renamed into place and its folder synced); blobs go out through
granian's pathsend. No metadata,
no names checked, no auth, no errors beyond what the bench's requests need: not a registry.

Run by `bench/run.py --floor` as `granian --interface asgi --workers 1 floor:app` with its storage
in FLOOR_STORAGE; one worker, so that an upload's hash, kept in memory between its requests,
is always at hand (Portside re-reads none either, on these requests).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BATCH_BYTES: Final = 4 * 1024 * 1024
STORAGE: Final = Path(os.environ.get("FLOOR_STORAGE", "floor-storage"))
UPLOADS: Final = STORAGE / "uploads"
BLOBS: Final = STORAGE / "blobs"

# An upload's hash of the bytes so far, and its size, by upload id.
_uploads: dict[str, tuple[hashlib._Hash, int]] = {}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            UPLOADS.mkdir(parents=True, exist_ok=True)
            BLOBS.mkdir(parents=True, exist_ok=True)
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    method, path = scope["method"], scope["path"]
    head, _, last = path.rpartition("/")
    if path == "/v2/":
        await _answer(send, 200)
    elif method == "POST" and path.endswith("/blobs/uploads/"):
        upload = uuid.uuid4().hex
        (UPLOADS / upload).touch()
        _uploads[upload] = (hashlib.sha256(), 0)
        await _answer(send, 202, {"location": f"{path}{upload}"})
    elif method == "PATCH" and head.endswith("/blobs/uploads"):
        size = await _append(last, receive, durable=True)
        await _answer(send, 202, {"location": path, "range": f"0-{size - 1}"})
    elif method == "PUT" and head.endswith("/blobs/uploads"):
        await _append(last, receive, durable=False)  # _place syncs it
        digest = _query(scope, "digest")
        hasher, _ = _uploads.pop(last)
        if digest != f"sha256:{hasher.hexdigest()}":
            await _answer(send, 400)
            return
        await asyncio.to_thread(_place, UPLOADS / last, BLOBS / digest)
        await _answer(send, 201, {"location": f"{head.removesuffix('/uploads')}/{digest}"})
    elif method in ("GET", "HEAD") and head.endswith("/blobs"):
        blob = BLOBS / last
        if not blob.is_file():
            await _answer(send, 404)
            return
        size = str(blob.stat().st_size).encode()
        headers = [(b"content-length", size), (b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.pathsend", "path": str(blob)})
    else:
        await _answer(send, 404)


async def _append(upload: str, receive: Receive, durable: bool) -> int:
    """Hash and write the request's body onto the upload (synced if durable); its size after."""
    hasher, size = _uploads[upload]
    fd = os.open(UPLOADS / upload, os.O_WRONLY | os.O_APPEND)
    try:
        batch: list[bytes] = []
        batched = 0
        absorbing: asyncio.Future[Any] | None = None
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
            chunk = message.get("body", b"")
            batch.append(chunk)
            batched += len(chunk)
            if batched >= BATCH_BYTES or not more:
                data = b"".join(batch)
                if absorbing is not None:
                    await absorbing
                absorbing = asyncio.gather(
                    asyncio.to_thread(hasher.update, data), asyncio.to_thread(_write, fd, data)
                )
                size += len(data)
                batch, batched = [], 0
        if absorbing is not None:
            await absorbing
        if durable:
            await asyncio.to_thread(os.fdatasync, fd)
    finally:
        os.close(fd)
    _uploads[upload] = (hasher, size)
    return size


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _place(upload: Path, blob: Path) -> None:
    fd = os.open(upload, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    upload.rename(blob)
    folder = os.open(BLOBS, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _query(scope: Scope, name: str) -> str:
    for pair in scope["query_string"].decode().split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value.replace("%3A", ":").replace("%3a", ":")
    return ""


async def _answer(send: Send, status: int, headers: dict[str, str] | None = None) -> None:
    pairs = [(b"content-length", b"0")]
    pairs += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": b""})
