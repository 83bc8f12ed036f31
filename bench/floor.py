"""The floor (`bench/run.py --floor`): the least that any registry served by granian must do with
an image, and nothing else, so that its ratio to distribution bounds what Portside can reach.

Uploads are hashed and written as Portside does it at its fastest (4 MiB batches, hashed in one
thread and written in another while the next batch arrives), made durable where Portside's
promise needs it (each PATCH synced before its 202, as an acknowledged chunk must survive a
crash; a finished blob synced, renamed into place and its folder synced); blobs go out through
granian's pathsend. A manifest is written durably by digest, and its tag is a symlink to it, put
in place durably. No names checked, no metadata beyond that, no auth, no errors beyond what the
bench's requests need: not a registry.

Run as `granian --interface asgi --workers N floor:app` with its storage in FLOOR_STORAGE. An
upload's hash is kept in the memory of the worker that took its last bytes, and its digest so far
in a file beside it: a PUT that closes it on any worker reads that, but a PATCH on another worker
must hash the upload again from the start. So one worker for the blob rows (Portside re-hashes
nothing on them), two for many small images or skopeo (one PATCH an upload at most).
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
MANIFESTS: Final = STORAGE / "manifests"
TAGS: Final = STORAGE / "tags"
# The bench pushes OCI image manifests only, and skopeo wants their type back as pushed.
MANIFEST_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"

# An upload's hash of the bytes so far, and its size, by upload id.
_uploads: dict[str, tuple[hashlib._Hash, int]] = {}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            for folder in (UPLOADS, BLOBS, MANIFESTS, TAGS):
                folder.mkdir(parents=True, exist_ok=True)
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
        await _answer(send, 202, {"location": f"{path}{upload}"})
    elif method == "PATCH" and head.endswith("/blobs/uploads"):
        size = await _append(last, receive, durable=True)
        await _answer(send, 202, {"location": path, "range": f"0-{size - 1}"})
    elif method == "PUT" and head.endswith("/blobs/uploads"):
        await _append(last, receive, durable=False)  # _place syncs it
        digest = _query(scope, "digest")
        if digest != f"sha256:{_digest(last)}":
            await _answer(send, 400)
            return
        await asyncio.to_thread(_place, UPLOADS / last, BLOBS / digest)
        await _answer(send, 201, {"location": f"{head.removesuffix('/uploads')}/{digest}"})
    elif method == "PUT" and head.endswith("/manifests"):
        content = await _body(receive)
        digest = f"sha256:{hashlib.sha256(content).hexdigest()}"
        await asyncio.to_thread(_put_manifest, _repository(head), last, digest, content)
        headers = {"location": f"{head}/{digest}", "docker-content-digest": digest}
        await _answer(send, 201, headers)
    elif method in ("GET", "HEAD") and head.endswith("/manifests"):
        manifest = MANIFESTS / last if last.startswith("sha256:") else _tag(_repository(head), last)
        try:
            content = manifest.read_bytes()
        except FileNotFoundError:
            await _answer(send, 404)
            return
        digest = f"sha256:{hashlib.sha256(content).hexdigest()}"
        headers = [
            (b"content-length", str(len(content)).encode()),
            (b"content-type", MANIFEST_TYPE.encode()),
            (b"docker-content-digest", digest.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else content})
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
    path = UPLOADS / upload
    kept = _uploads.get(upload)
    if kept is None or kept[1] != path.stat().st_size:  # another worker took the last chunk
        kept = await asyncio.to_thread(_hash_file, path)
    hasher, size = kept
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
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
    # What a PUT on another worker reads: written, not synced (a crash ends the upload anyway).
    path.with_suffix(".sha256").write_text(hasher.copy().hexdigest())
    return size


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    """The hash and size of an upload this worker has not seen: read again from the start."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(BATCH_BYTES):
            hasher.update(chunk)
            size += len(chunk)
    return hasher, size


def _digest(upload: str) -> str:
    """The upload's sha256, hex, as its last chunk left it (on whichever worker), and forget
    its hash."""
    _uploads.pop(upload, None)
    beside = (UPLOADS / upload).with_suffix(".sha256")
    return beside.read_text() if beside.exists() else hashlib.sha256().hexdigest()


async def _body(receive: Receive) -> bytes:
    parts = []
    more = True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


def _repository(head: str) -> str:
    """The repository of a path's head, /v2/<name>/manifests, as a file name."""
    return head.removeprefix("/v2/").removesuffix("/manifests").replace("/", "%")


def _tag(repository: str, tag: str) -> Path:
    return TAGS / f"{repository}:{tag}"


def _put_manifest(repository: str, reference: str, digest: str, content: bytes) -> None:
    _durably(MANIFESTS / digest, lambda temp: temp.write_bytes(content))
    if not reference.startswith("sha256:"):
        _durably(_tag(repository, reference), lambda temp: temp.symlink_to(MANIFESTS / digest))


def _durably(path: Path, make: Callable[[Path], object]) -> None:
    """Make path through a temporary name, synced, renamed into place, its folder synced."""
    temp = path.with_name(f".{uuid.uuid4().hex}")
    make(temp)
    if not temp.is_symlink():
        _sync(temp)
    temp.rename(path)
    _sync(path.parent)


def _sync(path: Path) -> None:
    """fsync a file or a folder (a file's name is not durable until its folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _place(upload: Path, blob: Path) -> None:
    _sync(upload)
    upload.rename(blob)
    upload.with_suffix(".sha256").unlink(missing_ok=True)
    _sync(blob.parent)


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
