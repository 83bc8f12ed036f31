"""The Upstream client: manifests, blobs, referrers and tags of one upstream registry over HTTP,
authenticated as it asks, behind a circuit breaker. See the package docstring for the contract."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import httpcore
import httpx

from portside import __version__
from portside.upstream.breaker import CircuitBreaker
from portside.upstream.challenges import Challenge, parse_challenges
from portside.upstream.errors import (
    UpstreamDenied,
    UpstreamError,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from portside.upstream.references import (
    check_digest,
    check_name,
    check_reference,
    is_digest,
    matches,
    sha256_digest,
)
from portside.upstream.responses import error_for, origin, read_limited, unavailable
from portside.upstream.tokens import (
    TokenCache,
    may_send_credentials,
    realm_url,
    request_token,
)

log = logging.getLogger(__name__)

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
# Not schema 1: it is deprecated, and its digests are over a signed payload we do not rebuild.
DEFAULT_ACCEPT: Final = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)

MANIFEST_LIMIT: Final = 4 * 1024 * 1024
TAG_PAGE_LIMIT: Final = 4 * 1024 * 1024
MAX_TAG_PAGES: Final = 100
MAX_REFERRERS_PAGES: Final = 100
BLOB_CHUNK: Final = 1024 * 1024
# httpcore reads a response 64 KiB at a time, and each read costs a pause and resume of the
# socket in the event loop: the cost of a cache's cold pull was in that. One read takes up to
# BLOB_CHUNK now (the upstream client is the only user of httpx in the server process).
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = BLOB_CHUNK
MAX_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_NEXT_LINK: Final = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    content: bytes
    media_type: str
    digest: str  # verified against content


class BlobStream:
    """A blob's bytes as they arrive: `async for chunk in stream`. `size` is the upstream's
    Content-Length (None if it sent none); the caller verifies the digest while storing."""

    def __init__(self, size: int | None, chunks: AsyncIterator[bytes]) -> None:
        self.size = size
        self._chunks = chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks


class Upstream:
    """One upstream registry at `url` (scheme, host and port: the /v2/ API is at its root).

    `username` and `password` answer its Basic or Bearer challenges; `allowed_realm_hosts` names
    token realms on other hosts that may see them (`host` or `host:port`). `connect_timeout`
    bounds connecting (and waiting for a pooled connection), `read_timeout` each read, not a
    whole download. `ca_file` is a PEM bundle trusted instead of the default roots (certifi);
    the machine's proxy and CA environment variables are ignored. `failure_threshold`,
    `open_seconds` and `clock` drive the circuit breaker and the token cache. Make and use it in
    one event loop (one per worker), and `aclose` it at shutdown."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5,
        read_timeout: float = 30,
        ca_file: str | None = None,
        allowed_realm_hosts: Sequence[str] = (),
        failure_threshold: int = 5,
        open_seconds: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = httpx.URL(url)
        if self.url.scheme not in ("http", "https") or not self.url.host:
            raise ValueError(f"upstream URL {url!r} is not http(s)://host[:port]")
        if self.url.path not in ("", "/") or self.url.query or self.url.userinfo:
            raise ValueError(f"upstream URL {url!r} has a path, query or credentials")
        self._basic: str | None = None
        if username is not None and password is not None:
            pair = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._basic = f"Basic {pair}"
        self._allowed_realm_hosts = frozenset(host.lower() for host in allowed_realm_hosts)
        self._client = httpx.AsyncClient(
            # Per read, so a long blob download lasts as long as bytes keep coming.
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout),
            verify=ssl.create_default_context(cafile=ca_file) if ca_file else True,
            trust_env=False,
            follow_redirects=False,  # followed here, to decide where credentials go
            headers={"User-Agent": f"portside/{__version__}", "Accept-Encoding": "identity"},
        )
        self._breaker = CircuitBreaker(failure_threshold, open_seconds, clock)
        self._clock = clock
        self._tokens = TokenCache(clock)
        # One token request per scope at a time; a lock lives while someone holds it.
        self._token_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._basic_challenged = False

    @property
    def available(self) -> bool:
        """False while the circuit is open, until a call succeeds again."""
        return self._breaker.available

    @property
    def last_error(self) -> str | None:
        """The last failure that counted against the circuit, for health reports."""
        return self._breaker.last_error

    async def aclose(self) -> None:
        await self._client.aclose()

    # Operations ---------------------------------------------------------------------------------

    async def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = ()
    ) -> ManifestInfo:
        path = _manifest_path(repository, reference)
        with self._call():
            response = await self._open("HEAD", path, repository, accept=accept or DEFAULT_ACCEPT)
            await response.aclose()
            size = _content_length(response)
            if size is None:
                raise UpstreamInvalid(f"HEAD {path}: no Content-Length")
            if size > MANIFEST_LIMIT:
                raise UpstreamInvalid(f"manifest of {size} bytes is over the limit")
            digest = _header_digest(response, reference)
            if digest is None:
                raise UpstreamInvalid(f"HEAD {path}: no Docker-Content-Digest")
            return ManifestInfo(digest, _media_type(response), size)

    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = ()
    ) -> FetchedManifest:
        path = _manifest_path(repository, reference)
        with self._call():
            response = await self._open("GET", path, repository, accept=accept or DEFAULT_ACCEPT)
            try:
                content = await read_limited(response, MANIFEST_LIMIT, "manifest")
            finally:
                await response.aclose()
            digest = _header_digest(response, reference)  # the reference if that is a digest
            if digest is not None and matches(digest, content) is not True:
                raise UpstreamInvalid(f"GET {path}: the content does not match {digest}")
            return FetchedManifest(content, _media_type(response), digest or sha256_digest(content))

    @contextlib.asynccontextmanager
    async def open_blob(self, repository: str, digest: str) -> AsyncIterator[BlobStream]:
        """The blob's bytes, streamed; redirects (to object storage) are followed."""
        path = f"/v2/{check_name(repository)}/blobs/{check_digest(digest)}"
        with self._call():
            response = await self._open("GET", path, repository)
        try:
            size = _content_length(response)
            yield BlobStream(size, self._chunks(response))
        finally:
            await response.aclose()

    async def has_blob(self, repository: str, digest: str) -> bool:
        """Whether the repository has the blob, asking for its first byte only: a HEAD could
        not follow the redirect to object storage that a GET is signed for. False on 404."""
        path = f"/v2/{check_name(repository)}/blobs/{check_digest(digest)}"
        with self._call():
            try:
                response = await self._open("GET", path, repository, byte_range="bytes=0-0")
            except UpstreamNotFound:
                return False
            await response.aclose()
            return True

    async def referrers(
        self, repository: str, digest: str, artifact_type: str | None = None
    ) -> bytes | None:
        """The image index of the manifests whose subject is digest (only those of artifact_type
        if given), its pages (the upstream's Link headers) joined in one; None when the upstream
        has no referrers API."""
        params = None if artifact_type is None else {"artifactType": artifact_type}
        url = self.url.copy_with(
            path=f"/v2/{check_name(repository)}/referrers/{check_digest(digest)}", params=params
        )
        pages: list[bytes] = []
        with self._call():
            for _ in range(MAX_REFERRERS_PAGES):
                try:
                    response = await self._open(
                        "GET", url.path, repository, accept=(OCI_INDEX,), params=url.params
                    )
                except UpstreamNotFound:
                    if pages:
                        raise UpstreamInvalid(
                            "the referrers index's next page is missing"
                        ) from None
                    return None
                try:
                    content = await read_limited(response, MANIFEST_LIMIT, "referrers index")
                finally:
                    await response.aclose()
                applied = response.headers.get("oci-filters-applied", "")
                if artifact_type is not None and "artifactType" not in applied.split(","):
                    content = _only_artifact_type(content, artifact_type)
                pages.append(content)
                following = self._next_page(response, "referrers index")
                if following is None:
                    return pages[0] if len(pages) == 1 else _joined(pages)
                url = following
        raise UpstreamInvalid(f"the referrers index has more than {MAX_REFERRERS_PAGES} pages")

    async def tags(self, repository: str) -> list[str]:
        """Every tag of the repository, following the upstream's pages."""
        path = f"/v2/{check_name(repository)}/tags/list"
        return await self._list(path, f"repository:{repository}:pull", "tags", "tag list")

    async def catalog(self) -> list[str]:
        """Every repository name the upstream's catalog lists, following its pages."""
        return await self._list("/v2/_catalog", "registry:catalog:*", "repositories", "catalog")

    async def _list(self, path: str, scope: str, field: str, what: str) -> list[str]:
        """The strings of `field` in every page of a paginated listing at path."""
        url = self.url.copy_with(path=path)
        found: list[str] = []
        with self._call():
            for _ in range(MAX_TAG_PAGES):
                response = await self._open("GET", url.path, "", params=url.params, scope=scope)
                try:
                    page = await read_limited(response, TAG_PAGE_LIMIT, what)
                finally:
                    await response.aclose()
                found.extend(_names(page, field, what))
                following = self._next_page(response, what)
                if following is None:
                    return found
                url = following
        raise UpstreamInvalid(f"the {what} has more than {MAX_TAG_PAGES} pages")

    def _next_page(self, response: httpx.Response, what: str) -> httpx.URL | None:
        """The page after response's, by its Link rel=next; None after the last. A next page
        on another host is refused: credentials go to the upstream's own origin only."""
        link = _NEXT_LINK.search(response.headers.get("link", ""))
        if link is None:
            return None
        url = response.url.join(link[1])
        if origin(url) != origin(self.url):
            raise UpstreamInvalid(f"the {what}'s next page is on another host")
        return url

    # HTTP ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """One operation under the circuit breaker, transport errors made UpstreamUnavailable."""
        self._breaker.before_call()
        try:
            try:
                yield
            except httpx.TransportError as error:
                raise unavailable(error) from error
            except httpx.DecodingError as error:
                raise UpstreamInvalid(f"undecodable response: {error}") from error
        except UpstreamUnavailable as error:
            self._breaker.failed(str(error))
            raise
        except UpstreamError:
            self._breaker.succeeded()  # it answered
            raise
        except BaseException:
            self._breaker.abandoned()
            raise
        else:
            self._breaker.succeeded()

    async def _chunks(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            # As they arrive, with no copy into chunks of our size: decoded only where the
            # upstream encoded them (registries do not). A cold pull through the cache took
            # 7-17 % less CPU and was 15-33 % faster so (medians of 6 and 8 alternating pulls).
            encoded = response.headers.get("content-encoding", "identity") != "identity"
            chunks = response.aiter_bytes(BLOB_CHUNK) if encoded else response.aiter_raw()
            async for chunk in chunks:
                yield chunk
        except httpx.TransportError as error:
            failure = unavailable(error)
            self._breaker.failed(str(failure))
            raise failure from error

    async def _open(
        self,
        method: str,
        path: str,
        repository: str,
        *,
        accept: Sequence[str] = (),
        params: httpx.QueryParams | dict[str, str] | None = None,
        byte_range: str | None = None,
        scope: str | None = None,
    ) -> httpx.Response:
        """A 2xx response to method on path, opened for streaming: the caller closes it.
        Authenticates once if the upstream challenges us (for scope; by default pulling from
        repository); other answers raise."""
        url = self.url.copy_with(path=path, params=params or {})
        headers = {"Accept": ", ".join(accept)} if accept else {}
        if byte_range is not None:
            headers["Range"] = byte_range
        scope = scope or f"repository:{repository}:pull"
        authorization = self._known_authorization(scope)
        response = await self._send(method, url, headers, authorization)
        if response.status_code == 401 and origin(response.url) == origin(self.url):
            challenges = parse_challenges(response.headers.get_list("www-authenticate"))
            await response.aclose()
            authorization = await self._authorize(challenges, scope, rejected=authorization)
            response = await self._send(method, url, headers, authorization)
        if 200 <= response.status_code < 300:
            return response
        try:
            raise await error_for(response)
        finally:
            await response.aclose()

    async def _send(
        self, method: str, url: httpx.URL, headers: dict[str, str], authorization: str | None
    ) -> httpx.Response:
        """The response after redirects. Credentials go only to the upstream's own origin: once
        redirected elsewhere (object storage), they are dropped for good."""
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers)
            if authorization is not None:
                sent["Authorization"] = authorization
            request = self._client.build_request(method, url, headers=sent)
            response = await self._client.send(request, stream=True)
            if response.status_code not in _REDIRECTS:
                return response
            await response.aclose()
            location = response.headers.get("location")
            if not location:
                raise UpstreamInvalid(f"{method} {url.path}: a redirect without Location")
            url = url.join(location)
            if url.scheme not in ("http", "https"):
                raise UpstreamInvalid(f"{method} {request.url.path}: redirect to {url.scheme}:")
            if origin(url) != origin(self.url):
                authorization = None
        raise UpstreamInvalid(f"{method} {url.path}: more than {MAX_REDIRECTS} redirects")

    def _known_authorization(self, scope: str) -> str | None:
        """What to send before being challenged: a cached token, or Basic once asked for it."""
        token = self._tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        return self._basic if self._basic_challenged else None

    async def _authorize(
        self, challenges: list[Challenge], scope: str, rejected: str | None
    ) -> str:
        """The Authorization to retry with, answering the upstream's challenge."""
        by_scheme = {challenge.scheme: challenge for challenge in challenges}
        if "bearer" in by_scheme:
            return f"Bearer {await self._token(by_scheme['bearer'], scope, rejected)}"
        if "basic" in by_scheme and self._basic is not None and rejected != self._basic:
            self._basic_challenged = True
            return self._basic
        offered = ", ".join(by_scheme) or "nothing"
        raise UpstreamDenied(f"401 without credentials for the challenge (offered: {offered})")

    async def _token(self, challenge: Challenge, scope: str, rejected: str | None) -> str:
        lock = self._token_locks.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(scope)
            if cached is not None and f"Bearer {cached}" != rejected:
                return cached  # fetched by another request while this one waited
            self._tokens.drop(scope)
            realm = realm_url(challenge.params.get("realm", ""))
            trusted = may_send_credentials(realm, self.url, self._allowed_realm_hosts)
            log.debug(
                "token for %s from %s://%s (%s)",
                scope,
                realm.scheme,
                realm.netloc.decode(),
                "with credentials" if trusted and self._basic else "anonymous",
            )
            obtained_at = self._clock()
            token, expires_in = await request_token(
                self._client,
                realm,
                service=challenge.params.get("service"),
                scope=scope,
                authorization=self._basic if trusted else None,
            )
            self._tokens.put(scope, token, expires_in, obtained_at)
            return token


def _manifest_path(repository: str, reference: str) -> str:
    return f"/v2/{check_name(repository)}/manifests/{check_reference(reference)}"


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise UpstreamInvalid(f"Content-Length {value!r} is not a number")
    return int(value)


def _media_type(response: httpx.Response) -> str:
    media_type: str = response.headers.get("content-type", "").partition(";")[0].strip()
    if not media_type:
        raise UpstreamInvalid(f"{response.request.url.path}: no Content-Type")
    return media_type


def _header_digest(response: httpx.Response, reference: str) -> str | None:
    """Docker-Content-Digest, checked for form, and against the reference if it is a digest."""
    digest: str | None = response.headers.get("docker-content-digest")
    if digest is None:
        return reference if is_digest(reference) else None
    if not is_digest(digest):
        raise UpstreamInvalid(f"Docker-Content-Digest {digest!r} is not a digest")
    if is_digest(reference) and digest != reference:
        raise UpstreamInvalid(f"asked for {reference}, the upstream answered {digest}")
    return digest


def _names(page: bytes, field: str, what: str) -> list[str]:
    try:
        names = json.loads(page).get(field) or []
    except (ValueError, AttributeError) as error:
        raise UpstreamInvalid(f"the {what} is not a JSON object") from error
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise UpstreamInvalid(f"the {what}'s {field} are not strings")
    return names


def _joined(pages: list[bytes]) -> bytes:
    """One referrers index of the entries of every page, in order."""
    try:
        indexes = [json.loads(page) for page in pages]
        joined = dict(indexes[0])
        joined["manifests"] = [entry for index in indexes for entry in index["manifests"]]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UpstreamInvalid("a referrers page is not an image index") from error
    return json.dumps(joined, separators=(",", ":")).encode()


def _only_artifact_type(content: bytes, artifact_type: str) -> bytes:
    """The referrers index without the entries of other artifact types, for upstreams that do
    not filter (they say so by leaving artifactType out of OCI-Filters-Applied)."""
    try:
        index = json.loads(content)
        manifests = index["manifests"]
        index["manifests"] = [
            entry for entry in manifests if entry.get("artifactType") == artifact_type
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UpstreamInvalid("the referrers answer is not an image index") from error
    return json.dumps(index, separators=(",", ":")).encode()
