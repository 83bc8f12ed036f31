"""The pull-through cache: repository names mapped to upstream registries, whose manifests and
blobs are fetched when first pulled and kept as ordinary content marked as cached.

    hub/library/alpine     the upstream mounted at `hub/`, its library/alpine
    library/alpine         the root upstream (the classic `mirroring.source`), when not stored here

A cached tag is checked upstream (a HEAD) at most once per time to live; a digest never is. When
the upstream fails (down, slow, 429, 5xx, or its circuit open), what is cached is served and the
log says it is stale. Blobs are fetched once however many pull them at once: in this process one
fill that every reader follows, across processes and instances a lease in the metadata store that
the others wait on. Nothing is readable before its digest is verified; the bytes are kept as the
upstream sent them, so pulls by digest work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from portside.metadata.base import CacheStore, Claim, Manifest
from portside.metrics import proxy as proxy_metrics
from portside.registry import keys
from portside.registry.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    UpstreamUnavailable,
)
from portside.registry.ingest import ingest, store
from portside.registry.manifest_store import ManifestStore
from portside.registry.manifests import parse
from portside.registry.names import Digest, is_tag
from portside.registry.reservations import reserved
from portside.storage.base import BlobStore
from portside.upstream.client import Upstream
from portside.upstream.errors import (
    UpstreamDenied,
    UpstreamError,
    UpstreamInvalid,
    UpstreamNotFound,
)
from portside.upstream.errors import UpstreamUnavailable as Unreachable

log = logging.getLogger("portside.mirror")

DOCKER_HUB_API: Final = "registry-1.docker.io"
# How often a pull time is written for one manifest in this process: pulls stay free of writes.
TOUCH_EVERY: Final = timedelta(minutes=1)
TOUCHED_MAX: Final = 16384
# A process filling a blob holds this lease, renewed while bytes flow; another process waits.
FILL_LEASE: Final = timedelta(seconds=30)
# How often a process waiting on another's fill looks whether it is done: soon, then less often.
WAIT_POLL: Final = 0.05
WAIT_POLL_MAX: Final = 0.5
# Chunks a reader may fall behind the fill before the fill waits for it, and for how long.
QUEUE_CHUNKS: Final = 64
STALLED_SECONDS: Final = 30.0


class BlobFetchFailed(Exception):
    """A blob's fetch from the upstream broke off while a response was streaming it."""


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass(frozen=True, slots=True)
class UpstreamRoute:
    """How one upstream is mounted: at prefix (ROOT "" for the classic `source`)."""

    prefix: str
    upstream: Upstream
    merged: bool
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class Route:
    """A repository name's upstream, and its name there."""

    mount: UpstreamRoute
    remote: str

    @property
    def upstream(self) -> Upstream:
        return self.mount.upstream


@dataclass(slots=True)
class Fetched:
    """A manifest served by the cache, and how: `hit` (stored and fresh), `stale` (the upstream
    failed), `miss` (fetched now), `revalidated` (checked upstream, unchanged)."""

    manifest: Manifest
    content: bytes
    outcome: str


@dataclass(slots=True)
class _Fill:
    """One fetch of a blob into storage for a repository, which the requests for it in this
    process follow as the bytes arrive."""

    digest: Digest
    name: str
    size: int | None = None  # the upstream's Content-Length, once it answered
    # True once the upstream answered (bytes follow), False when another process stored the
    # blob meanwhile (nothing to follow: read it from storage).
    opened: asyncio.Future[bool] = field(default_factory=_future)
    done: asyncio.Future[int] = field(default_factory=_future)
    readers: list[asyncio.Queue[bytes | None]] = field(default_factory=list)
    sent: int = 0  # bytes handed to readers so far: a reader joining later cannot follow live
    failed: bool = False  # the fetch broke off: readers following it must not end cleanly
    fetched: int = 0  # bytes taken from the upstream


@dataclass(frozen=True, slots=True)
class LiveBlob:
    """A blob's bytes as the upstream sends them, while they are stored."""

    size: int | None
    chunks: AsyncIterator[bytes]
    fill: _Fill


class Mirror:
    def __init__(
        self,
        storage: BlobStore,
        metadata: CacheStore,
        mounts: Sequence[UpstreamRoute],
        manifests: ManifestStore,
    ) -> None:
        """manifests: the registry's own, whose reads (and their cache) serve what is held."""
        self._storage = storage
        self._metadata = metadata
        self._manifests = manifests
        self._mounts = {mount.prefix: mount for mount in mounts}
        self._root = self._mounts.get("")
        self._fills: dict[str, _Fill] = {}
        self._manifest_fetches: dict[tuple[str, str], asyncio.Future[Fetched]] = {}
        self._touched: dict[tuple[str, str], float] = {}
        self._holder = uuid.uuid4().hex

    @property
    def upstreams(self) -> Mapping[str, Upstream]:
        return {prefix: mount.upstream for prefix, mount in self._mounts.items()}

    async def close(self) -> None:
        for mount in self._mounts.values():
            await mount.upstream.aclose()

    # Names --------------------------------------------------------------------------------------

    def route(self, name: str) -> Route | None:
        """The upstream a repository name maps to, by its first component; else the root's."""
        prefix, sep, rest = name.partition("/")
        mount = self._mounts.get(prefix) if sep and prefix else None
        if mount is not None:
            return Route(mount, _remote_name(mount.upstream, rest))
        if self._root is not None:
            return Route(self._root, _remote_name(self._root.upstream, name))
        return None

    def refuses_push(self, name: str) -> str | None:
        """Why a push to name is refused (it is a cache's namespace), or None."""
        route = self.route(name)
        if route is None or route.mount.merged:
            return None
        return (
            f"{route.mount.prefix}/ is a pull-through cache of {route.upstream.url}: "
            f"push to a namespace of this registry's own"
        )

    # Manifests ----------------------------------------------------------------------------------

    async def manifest(
        self, route: Route, name: str, reference: str, accept: Sequence[str]
    ) -> Fetched:
        """The manifest of name by tag or digest: local, checked upstream when its tag's time to
        live is over, or fetched; ManifestUnknown when neither has it."""
        if ":" in reference:
            digest = _manifest_digest(reference)
            local = await self._local(name, str(digest))
            if local is not None:
                await self._touch(name, local[0].digest)
                return Fetched(*local, outcome="hit")
            return await self._fetch_once(route, name, str(digest), None, accept)
        if not is_tag(reference):
            raise ManifestUnknown({"reference": reference[:200]})
        local = await self._local(name, reference)
        if local is None:
            return await self._fetch_once(route, name, reference, reference, accept)
        checked = await self._metadata.cached_tag(name, reference)
        if checked is None or _now() - checked < route.mount.ttl:
            # A tag pushed here (merged namespaces) is never looked up upstream.
            await self._touch(name, local[0].digest)
            return Fetched(*local, outcome="hit")
        return await self._revalidate(route, name, reference, accept, local)

    async def _revalidate(
        self,
        route: Route,
        name: str,
        tag: str,
        accept: Sequence[str],
        local: tuple[Manifest, bytes],
    ) -> Fetched:
        try:
            info = await route.upstream.head_manifest(route.remote, tag, accept)
        except UpstreamNotFound:
            # Gone upstream: so it is here, as a cache of what the upstream has.
            await self._metadata.delete_tag(name, tag)
            raise ManifestUnknown({"reference": tag, "upstream": "has no such tag"}) from None
        except UpstreamError as error:
            log.warning("serving %s:%s stale: %s", name, tag, _why(route, error))
            return Fetched(*local, outcome="stale")
        if info.digest == local[0].digest:
            await self._metadata.touch_cached(name, info.digest, _now(), tag=tag)
            return Fetched(*local, outcome="revalidated")
        try:
            return await self._fetch_once(route, name, info.digest, tag, accept)
        except UpstreamUnavailable as error:
            log.warning("serving %s:%s stale: %s", name, tag, error)
            return Fetched(*local, outcome="stale")

    async def _local(self, name: str, reference: str) -> tuple[Manifest, bytes] | None:
        try:
            return await self._manifests.get(name, reference)
        except ManifestUnknown:
            return None

    async def _fetch_once(
        self, route: Route, name: str, reference: str, tag: str | None, accept: Sequence[str]
    ) -> Fetched:
        """_fetch, shared by the concurrent pulls of one name and reference in this process."""
        key = (name, reference)
        pending = self._manifest_fetches.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        self._manifest_fetches[key] = future
        try:
            fetched = await self._fetch(route, name, reference, tag, accept)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no warning when nobody else waited
            raise
        finally:
            del self._manifest_fetches[key]
        future.set_result(fetched)
        return fetched

    async def _fetch(
        self, route: Route, name: str, reference: str, tag: str | None, accept: Sequence[str]
    ) -> Fetched:
        try:
            fetched = await route.upstream.get_manifest(route.remote, reference, accept)
        except UpstreamNotFound:
            raise ManifestUnknown({"reference": reference[:200]}) from None
        except UpstreamDenied as error:
            raise ManifestUnknown({"reference": reference[:200], "upstream": str(error)}) from None
        except (Unreachable, UpstreamInvalid) as error:
            raise _unavailable(route, error) from None
        digest = Digest.parse(fetched.digest)
        if ":" in reference and str(digest) != reference:
            raise _unavailable(route, UpstreamInvalid(f"sent {digest} for {reference}"))
        try:
            parsed = parse(fetched.content, fetched.media_type)
        except ManifestInvalid as error:
            raise _unavailable(route, UpstreamInvalid(f"an invalid manifest: {error}")) from None
        manifest = Manifest(
            repository=name,
            digest=str(digest),
            media_type=parsed.media_type,
            size=len(fetched.content),
            artifact_type=parsed.artifact_type,
            subject=parsed.subject,
            annotations=parsed.annotations,
            description=parsed.description,
        )
        await store(
            self._metadata,
            digest,
            len(fetched.content),
            lambda: self._storage.put(keys.blob(digest), fetched.content),
            lambda token: self._metadata.put_cached_manifest(
                manifest, parsed.references, tag, token, _now()
            ),
        )
        log.info("cached %s@%s from %s", name, digest, route.upstream.url)
        proxy_metrics.pulled_bytes.labels("manifest").inc(len(fetched.content))
        return Fetched(manifest, fetched.content, outcome="miss")

    async def _touch(self, name: str, digest: str) -> None:
        """Record a pull, at most once per TOUCH_EVERY per manifest in this process."""
        key = (name, digest)
        now = time.monotonic()
        last = self._touched.get(key)
        if last is not None and now - last < TOUCH_EVERY.total_seconds():
            return
        if len(self._touched) >= TOUCHED_MAX:
            self._touched.clear()
        self._touched[key] = now
        await self._metadata.touch_cached(name, digest, _now())

    async def referrers(
        self, route: Route, name: str, subject: Digest, artifact_type: str | None
    ) -> bytes | None:
        """The upstream's referrers index of subject (signatures, SBOMs: a client then pulls
        each by digest, which caches it); None when the upstream has no referrers API or
        fails, and the referrers cached here are to be listed instead."""
        try:
            return await route.upstream.referrers(route.remote, str(subject), artifact_type)
        except UpstreamError as error:
            log.warning("listing cached referrers of %s@%s: %s", name, subject, _why(route, error))
            return None

    async def tags(self, route: Route, name: str) -> list[str] | None:
        """The upstream repository's tags (a cache lists what it can serve, not only what it
        holds); None when the upstream does not have it or fails (the tags held here are
        listed then)."""
        try:
            return await route.upstream.tags(route.remote)
        except UpstreamNotFound:
            return None
        except UpstreamError as error:
            log.warning("listing cached tags of %s: %s", name, _why(route, error))
            return None

    # Blobs --------------------------------------------------------------------------------------

    async def blob_size(self, route: Route, name: str, digest: Digest) -> int:
        """Make the blob readable in name, fetching it if the registry does not store it yet;
        its size. BlobUnknown when the upstream does not have it."""
        size = await self._metadata.blob_size(str(digest))
        if size is None:
            fill = self._fill(route, name, digest)
            size = await asyncio.shield(fill.done)
            if fill.name == name:
                return size
        elif (linked := await self._metadata.linked_blob_size(name, str(digest))) is not None:
            return linked  # stored for name meanwhile (another process's fill, for one)
        # Stored for another repository: the upstream says whether this one has it.
        await self._confirm(route, digest)
        await self._link(name, digest, size)
        return size

    async def open_blob(self, route: Route, name: str, digest: Digest) -> LiveBlob | None:
        """The bytes of a blob not stored yet as the upstream sends them, when this request can
        follow its fetch from the first byte; else None, once the blob is readable in name
        (read it from storage then)."""
        if await self._metadata.linked_blob_size(name, str(digest)) is not None:
            return None
        if await self._metadata.blob_size(str(digest)) is None:
            fill = self._fill(route, name, digest)
            if fill.name == name and not fill.sent and not fill.done.done():
                queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_CHUNKS)
                fill.readers.append(queue)
                try:
                    fetching = await asyncio.shield(fill.opened)
                except BaseException:
                    _drop(fill, queue)
                    raise
                if fetching:
                    return LiveBlob(fill.size, _follow(fill, queue), fill)
                _drop(fill, queue)
        await self.blob_size(route, name, digest)
        return None

    def _fill(self, route: Route, name: str, digest: Digest) -> _Fill:
        key = str(digest)
        fill = self._fills.get(key)
        if fill is None or fill.done.done():
            fill = self._fills[key] = _Fill(digest, name)
            task = asyncio.ensure_future(self._run_fill(route, name, fill))
            task.add_done_callback(lambda _: self._forget_fill(key, fill))
        return fill

    def _forget_fill(self, key: str, fill: _Fill) -> None:
        # Only this fill: a newer one may have taken its place once it was done.
        if self._fills.get(key) is fill:
            del self._fills[key]

    async def _run_fill(self, route: Route, name: str, fill: _Fill) -> None:
        try:
            size = await self._fill_once(route, name, fill)
        except BaseException as error:
            fill.failed = True
            _end_readers_now(fill)
            failure = error if isinstance(error, Exception) else BlobUnknown()
            for future in (fill.opened, fill.done):
                if not future.done():
                    future.set_exception(failure)
                    future.exception()  # retrieved: no warning when nobody waited
            if not isinstance(error, Exception):
                raise
            return
        await _end_readers(fill)
        if not fill.opened.done():
            fill.opened.set_result(False)
        fill.done.set_result(size)

    async def _fill_once(self, route: Route, name: str, fill: _Fill) -> int:
        """Fetch the blob unless another process is fetching it, whose fill is then awaited."""
        lease = f"fill:{fill.digest}"
        delay = WAIT_POLL
        while True:
            size = await self._metadata.blob_size(str(fill.digest))
            if size is not None:
                # Stored by another process's fill for this repository, or for another one.
                if await self._metadata.linked_blob_size(name, str(fill.digest)) is None:
                    await self._confirm(route, fill.digest)
                    await self._link(name, fill.digest, size)
                return size
            held = await self._metadata.acquire_lease(lease, self._holder, FILL_LEASE)
            if held.holder == self._holder:
                # Another process may have stored the blob and let go of the lease since the
                # look above: look again, holding it.
                if await self._metadata.blob_size(str(fill.digest)) is None:
                    break
                await self._metadata.release_lease(lease, self._holder)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, WAIT_POLL_MAX)
        try:
            return await self._fetch_blob(route, name, fill, lease)
        finally:
            await asyncio.shield(self._metadata.release_lease(lease, self._holder))

    async def _fetch_blob(self, route: Route, name: str, fill: _Fill, lease: str) -> int:
        digest = fill.digest

        def link(size: int, token: Claim) -> Awaitable[None]:
            return self._metadata.link_blob(name, str(digest), size, token)

        try:
            async with contextlib.aclosing(self._stream(route, fill, lease)) as body:
                size = await ingest(self._storage, self._metadata, digest, body, link)
        except UpstreamNotFound:
            raise BlobUnknown({"digest": str(digest)}) from None
        except UpstreamDenied as error:
            raise BlobUnknown({"digest": str(digest), "upstream": str(error)}) from None
        except (Unreachable, UpstreamInvalid) as error:
            raise _unavailable(route, error) from None
        except DigestInvalid as error:
            log.warning("%s sent %s for %s: not kept", route.upstream.url, error.detail, digest)
            raise _unavailable(route, UpstreamInvalid(f"sent other bytes for {digest}")) from None
        log.info("cached %s@%s (%d bytes) from %s", name, digest, size, route.upstream.url)
        proxy_metrics.pulled_bytes.labels("blob").inc(size)
        return size

    async def _stream(self, route: Route, fill: _Fill, lease: str) -> AsyncGenerator[bytes, None]:
        """The blob's bytes from the upstream, handed to the readers following the fill as they
        arrive, while the fill's lease is renewed."""
        renewed = time.monotonic()
        async with route.upstream.open_blob(route.remote, str(fill.digest)) as stream:
            fill.size = stream.size
            fill.opened.set_result(True)
            async for chunk in stream:
                fill.fetched += len(chunk)
                await _broadcast(fill, chunk)
                if time.monotonic() - renewed > FILL_LEASE.total_seconds() / 3:
                    renewed = time.monotonic()
                    await self._metadata.acquire_lease(lease, self._holder, FILL_LEASE)
                yield chunk
        if fill.size is not None and fill.size != fill.fetched:
            raise UpstreamInvalid(f"sent {fill.fetched} bytes of {fill.size} for {fill.digest}")
        # Every byte is out: the readers' responses end now, not once the blob is stored (its
        # digest is checked then; a client checks it too, and a mismatch keeps nothing here).
        await _end_readers(fill)

    async def _confirm(self, route: Route, digest: Digest) -> None:
        """That the upstream repository has the blob: its first byte asked for, no more."""
        try:
            if await route.upstream.has_blob(route.remote, str(digest)):
                return
        except UpstreamDenied:
            pass
        except (Unreachable, UpstreamInvalid) as error:
            raise _unavailable(route, error) from None
        raise BlobUnknown({"digest": str(digest)})

    async def _link(self, name: str, digest: Digest, size: int) -> None:
        async with reserved(self._metadata, digest, size) as reservation:
            await self._metadata.link_blob(name, str(digest), size, reservation.token)


async def _broadcast(fill: _Fill, chunk: bytes | None) -> None:
    """Hand a chunk (None: the end) to the readers following the fill, each as fast as it
    reads; one stalled longer than STALLED_SECONDS is dropped, its response cut short (the fill
    goes on)."""
    if chunk is not None:
        fill.sent += len(chunk)
    for queue in list(fill.readers):
        try:
            queue.put_nowait(chunk)
        except asyncio.QueueFull:
            try:
                await asyncio.wait_for(queue.put(chunk), STALLED_SECONDS)
            except TimeoutError:
                _drop(fill, queue)


async def _end_readers(fill: _Fill) -> None:
    await _broadcast(fill, None)
    fill.readers.clear()


def _end_readers_now(fill: _Fill) -> None:
    """End the readers without waiting (the fill failed or was cancelled): a full queue's
    reader is woken by an empty one, which it takes as the failure it is."""
    for queue in fill.readers:
        with contextlib.suppress(asyncio.QueueEmpty):
            while queue.full():
                queue.get_nowait()
        queue.put_nowait(None)
    fill.readers.clear()


async def _follow(fill: _Fill, queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    """The chunks of the fill as they arrive, until it ends (or drops this reader)."""
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        if fill.failed:
            # Headers are out: only a broken response tells the client its bytes are not all.
            raise BlobFetchFailed(str(fill.digest))
    finally:
        _drop(fill, queue)


def _drop(fill: _Fill, queue: asyncio.Queue[bytes | None]) -> None:
    if queue in fill.readers:
        fill.readers.remove(queue)


def _remote_name(upstream: Upstream, name: str) -> str:
    # Docker Hub's official images live under library/, which docker adds on the client side.
    if upstream.url.host == DOCKER_HUB_API and "/" not in name:
        return f"library/{name}"
    return name


def _manifest_digest(reference: str) -> Digest:
    try:
        return Digest.parse(reference)
    except DigestInvalid as error:
        raise ManifestUnknown(error.detail) from None


def _why(route: Route, error: Exception) -> str:
    return f"{route.upstream.url}: {error}"


def _unavailable(route: Route, error: Exception) -> UpstreamUnavailable:
    retry_after = getattr(error, "retry_after", None)
    return UpstreamUnavailable(
        {"upstream": str(route.upstream.url), "reason": str(error)[:300]},
        retry_after=None if retry_after is None else max(1, int(retry_after)),
    )


def _now() -> datetime:
    return datetime.now(UTC)
