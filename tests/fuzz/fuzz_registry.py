"""A registry in-process for the fuzz suite: opened once per test on a metadata backend, with
auth on or off, driven from synchronous hypothesis tests through an event loop of its own.

A library, like tests/spec/helpers.py, so no test_ prefix.

Requests go through `httpx.ASGITransport`, which re-raises whatever escapes the app: `send`
catches it and answers an `Outcome` whose status is 500 and whose `error` says what escaped, so
that "no 5xx" covers both. A request that does not answer within REQUEST_TIMEOUT seconds counts
as a failure too (status 599): a hang is as bad as a crash.

`state()` is what property (b) compares: the metadata store's whole graph (`gc_snapshot`:
manifests, tags, references, blob links, blobs, reservations, uploads) and the blob files in the
storage folder, each as a set.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import reject

from portside.auth.htpasswd import Scheme, add_user
from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import create_app
from postgres import schema

T = TypeVar("T")

BASE_URL: Final = "http://registry.test"
REQUEST_TIMEOUT: Final = 30.0
POSTGRES_VARIABLE: Final = "PORTSIDE_TEST_POSTGRES_URL"

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_JSON: Final = b"{}"
SIGNATURE: Final = "application/vnd.example.signature"

# The users of the auth-on registry (bcrypt, fast rounds) and what they may do: alice and bob
# their own namespaces only (user_namespaces), anyone public/*, admin everything.
PASSWORDS: Final = {
    "alice": "alice-Secret-1",
    "bob": "bob-Secret-2",
    "admin": "admin-Secret-5",
}
ACCESS: Final = {
    "anonymous_pull": ["public/*"],
    "user_namespaces": True,
    "rules": [{"repositories": ["*"], "users": ["admin"], "actions": ["*"]}],
}
# Junk credentials are most of what the fuzzer sends: without this, the failed-login limit would
# answer 429 to everyone after five, and alice's and bob's own requests would test nothing.
LOGIN_LIMIT: Final = {"failures": 1_000_000, "window_seconds": 1.0}
# The auth-on registry also has limits, so that 413 paths are reachable with small bodies; the
# auth-off one keeps the defaults (no blob limit, 4 MiB manifests).
SMALL_LIMITS: Final = {"max_manifest_size": 8192, "max_blob_size": 8192}

BACKENDS: Final = ("sqlite", "postgresql")
# Off; Basic auth from htpasswd; and the built-in token service, whose bearer tokens the
# registry then takes instead.
AUTH_MODES: Final = ("auth-off", "auth-basic", "auth-token")
SERVICE: Final = "registry.test"
SEEDED_NAMES: Final = ("library/app", "alice/app", "bob/secret", "public/base")


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def basic(username: str, password: str | None = None) -> str:
    secret = PASSWORDS[username] if password is None else password
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


class NotSent(Exception):
    """httpx refused to build the request: the fuzzer's problem, not the registry's."""


@dataclass
class Outcome:
    """What a request got: a response, or an exception that escaped the app (status 500), or
    nothing within REQUEST_TIMEOUT (599)."""

    status: int
    headers: httpx.Headers
    content: bytes
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status >= 500

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.status} (escaped: {self.error})"
        return f"{self.status} {self.content[:300]!r}"


@dataclass(frozen=True)
class Request:
    """One request as the fuzzer builds it; `url` is the path and raw query string; `login`,
    a user whose own credentials go first (Basic, or their bearer token in token mode)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    login: str | None = None

    def __repr__(self) -> str:  # what hypothesis prints as the falsifying example
        headers = "".join(f"\n    {name}: {value!r}" for name, value in self.headers)
        body = f"\n    body ({len(self.body)} bytes): {self.body[:400]!r}" if self.body else ""
        login = f" as {self.login}" if self.login else ""
        return f"\n  {self.method} {self.url!r}{login}{headers}{body}"


@dataclass(frozen=True)
class State:
    """The registry's state as property (b) compares it."""

    metadata: Mapping[str, frozenset[Any]]
    blob_files: frozenset[str]

    def without_upload(self, upload_id: str) -> State:
        uploads = frozenset(u for u in self.metadata["uploads"] if u.id != upload_id)
        return State({**self.metadata, "uploads": uploads}, self.blob_files)

    def difference(self, other: State) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        for key in self.metadata:
            gone, added = (
                self.metadata[key] - other.metadata[key],
                other.metadata[key] - self.metadata[key],
            )
            if gone or added:
                changed[key] = {"gone": sorted(map(repr, gone)), "added": sorted(map(repr, added))}
        if self.blob_files != other.blob_files:
            changed["blob files"] = {
                "gone": sorted(self.blob_files - other.blob_files),
                "added": sorted(other.blob_files - self.blob_files),
            }
        return changed


@dataclass
class Seeded:
    """What `seed` pushed: names, tags, digests and bytes for the strategies to reuse."""

    names: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    manifests: dict[str, bytes] = field(default_factory=dict)  # digest -> body
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes
    uploads: list[str] = field(default_factory=list)  # Locations of uploads in progress
    blobs_in: dict[str, set[str]] = field(default_factory=dict)  # repository -> digests
    manifests_in: dict[str, set[str]] = field(default_factory=dict)  # repository -> digests


class Fuzzed:
    """A registry app on one backend, auth on or off, and an event loop to drive it."""

    def __init__(self, settings: Settings, backend: str, auth: str) -> None:
        self.settings = settings
        self.backend = backend
        self.mode = auth
        self.auth = auth != "auth-off"
        self.tokens: dict[str, str] = {}
        self.runner = asyncio.Runner()
        self.app = create_app(settings)
        self.metadata = self.app.state.registry.metadata
        self.client = self.run(self._client())
        self.seeded = Seeded()
        self.reached = False

    def __repr__(self) -> str:
        return f"<registry on {self.backend}, {self.mode}>"

    async def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._entered), base_url=BASE_URL
        )

    async def _entered(self, scope: Any, receive: Any, send: Any) -> None:
        """The app, noting that a request reached it (else httpx refused to build it)."""
        self.reached = True
        await self.app(scope, receive, send)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def close(self) -> None:
        try:
            self.run(self.client.aclose())
            self.run(self.metadata.close())
        finally:
            self.runner.close()

    async def send(self, request: Request) -> Outcome:
        """The request, whatever becomes of it: an exception out of the app is a 500. One that
        httpx cannot even send (a URL too long for it, say) raises NotSent."""
        sent = list(request.headers)
        if request.login is not None and self.auth:
            sent.insert(0, ("Authorization", await self.authorization(request.login)))
        # After the token request authorization() may send, which reaches the app itself.
        self.reached = False
        headers = [(k.encode(), v.encode("utf-8", "surrogatepass")) for k, v in sent]
        try:
            response = await asyncio.wait_for(
                self.client.request(
                    request.method, BASE_URL + request.url, headers=headers, content=request.body
                ),
                REQUEST_TIMEOUT,
            )
        except TimeoutError:
            return Outcome(599, httpx.Headers(), b"", f"no answer in {REQUEST_TIMEOUT} s")
        except Exception as error:
            if not self.reached:
                raise NotSent(f"httpx did not send {request!r}: {error!r}") from error
            where = traceback.extract_tb(error.__traceback__)[-1]
            escaped = (
                f"{type(error).__name__}: {str(error)[:300]} at {where.filename}:{where.lineno}"
            )
            return Outcome(500, httpx.Headers(), b"", escaped)
        return Outcome(response.status_code, response.headers, response.content)

    async def authorization(self, user: str) -> str:
        """The user's own credentials: Basic, or in token mode a bearer token for the seeded
        repositories and the catalog (fetched once)."""
        if self.mode != "auth-token":
            return basic(user)
        if user not in self.tokens:
            scopes = "&".join(f"scope=repository:{name}:pull,push,delete" for name in SEEDED_NAMES)
            url = f"/auth/token?service={SERVICE}&{scopes}&scope=registry:catalog:*"
            got = await self.send(Request("GET", url, (("Authorization", basic(user)),)))
            assert got.status == 200, got.describe()
            self.tokens[user] = json.loads(got.content)["token"]
        return f"Bearer {self.tokens[user]}"

    def request(
        self,
        method: str,
        url: str,
        user: str | None = "admin",
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Outcome:
        """A request as `user` (their own credentials when auth is on)."""
        return self.run(self.send(Request(method, url, tuple(headers), body, user)))

    def check(self, request: Request) -> Outcome:
        """Send request and assert properties (a) and (b): no 5xx and nothing escaped; and when
        it got a 4xx, the same state before and after, but for what `allowed_change` excludes.
        A request httpx cannot send is rejected as an example (hypothesis draws another)."""
        before = self.run(self.state())
        try:
            outcome = self.run(self.send(request))
        except NotSent:
            reject()
        assert not outcome.failed, f"{self}: {request!r}\n  -> {outcome.describe()}"
        if 400 <= outcome.status < 500:
            after = self.run(self.state())
            before, after = allowed_change(request, outcome, before, after)
            assert before == after, (
                f"{self}: a {outcome.status} changed the registry: {request!r}\n"
                f"  -> {outcome.describe()}\n  changed: {before.difference(after)}"
            )
        return outcome

    async def state(self) -> State:
        snapshot = await self.metadata.gc_snapshot()
        metadata = {f.name: frozenset(getattr(snapshot, f.name)) for f in fields(snapshot)}
        root = Path(self.settings.storage_path) / "blobs"
        files = frozenset(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
        return State(metadata, files)

    # Pushes that must succeed: the registry content the fuzzer's requests aim at.

    def must(self, method: str, url: str, body: bytes = b"", **headers: str) -> Outcome:
        outcome = self.request(method, url, body=body, headers=list(headers.items()))
        assert outcome.status in (201, 202), (method, url, outcome.describe())
        return outcome

    def push_blob(self, name: str, data: bytes) -> str:
        digest = digest_of(data)
        self.must("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data)
        self.seeded.blobs[digest] = data
        self.seeded.blobs_in.setdefault(name, set()).add(digest)
        return digest

    def push_manifest(self, name: str, reference: str | None, document: dict[str, Any]) -> str:
        body = json.dumps(document, indent=2).encode()
        digest = digest_of(body)
        self.must(
            "PUT",
            f"/v2/{name}/manifests/{reference or digest}",
            body,
            **{"Content-Type": document["mediaType"]},
        )
        self.seeded.manifests[digest] = body
        self.seeded.manifests_in.setdefault(name, set()).add(digest)
        if reference is not None and reference not in self.seeded.tags:
            self.seeded.tags.append(reference)
        return digest

    def push_image(self, name: str, tag: str | None, media_type: str = OCI_MANIFEST) -> str:
        config_type, layer_type = (
            (OCI_CONFIG, OCI_LAYER) if media_type == OCI_MANIFEST else (DOCKER_CONFIG, DOCKER_LAYER)
        )
        config = json.dumps({"architecture": "amd64", "os": "linux", "name": name}).encode()
        layer = f"layer of {name} {tag} {media_type}".encode() * 8
        document = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(config_type, config),
            "layers": [descriptor(layer_type, layer)],
        }
        self.push_blob(name, config)
        self.push_blob(name, layer)
        return self.push_manifest(name, tag, document)

    def seed(self) -> Seeded:
        """Images, an index, a docker schema 2 image, an artifact with a subject, and an upload
        in progress with bytes in it, in a few repositories of each kind of owner."""
        for name in SEEDED_NAMES:
            self.seeded.names.append(name)
            image = self.push_image(name, "latest")
            docker = self.push_image(name, "docker", DOCKER_MANIFEST)
            image_body = self.seeded.manifests[image]
            index = {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": image,
                        "size": len(image_body),
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ],
            }
            self.push_manifest(name, "multi", index)
            self.push_blob(name, EMPTY_JSON)
            signature = f"signature over {image} in {name}".encode()
            self.push_blob(name, signature)
            artifact = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": SIGNATURE,
                "config": descriptor(OCI_EMPTY, EMPTY_JSON),
                "layers": [descriptor("application/vnd.example.data", signature)],
                "subject": {"mediaType": OCI_MANIFEST, "digest": image, "size": len(image_body)},
                "annotations": {"org.opencontainers.image.description": f"the {name} image"},
            }
            self.push_manifest(name, None, artifact)
            del docker
            started = self.must("POST", f"/v2/{name}/blobs/uploads/")
            location = started.headers["location"]
            self.must(
                "PATCH",
                location,
                b"0123456789",
                **{"Content-Type": "application/octet-stream", "Content-Range": "0-9"},
            )
            self.seeded.uploads.append(location)
        return self.seeded


UPLOAD_PATH: Final = re.compile(r"/v2/.+/blobs/uploads/([^/?]+)")


def error_code(outcome: Outcome) -> str | None:
    try:
        return str(json.loads(outcome.content)["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def allowed_change(
    request: Request, outcome: Outcome, before: State, after: State
) -> tuple[State, State]:
    """before and after without what the spec (or distribution) lets this 4xx change.

    The one exclusion: a PUT that closes an upload with a digest that does not match its bytes
    (400 DIGEST_INVALID) ends that upload session, as distribution's PutBlobUploadComplete
    cancels it (registry/handlers/blobupload.go): the session's row may go, nothing else may
    change."""
    found = UPLOAD_PATH.fullmatch(request.url.partition("?")[0])
    if (
        found is not None
        and request.method == "PUT"
        and outcome.status == 400
        and error_code(outcome) == "DIGEST_INVALID"
    ):
        upload_id = unquote(found.group(1))
        return before.without_upload(upload_id), after.without_upload(upload_id)
    return before, after


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def _storage_folder() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > 1 << 30:
        return Path(tempfile.mkdtemp(prefix="portside-fuzz-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="portside-fuzz-"))


@contextmanager
def open_registry(backend: str, auth: str) -> Iterator[Fuzzed]:
    """A fresh registry: SQLite in its storage folder, or a schema of its own on the PostgreSQL
    that PORTSIDE_TEST_POSTGRES_URL names (skipped when it names none); auth one of
    AUTH_MODES."""
    assert auth in AUTH_MODES, auth
    with ExitStack() as stack:
        root = _storage_folder()
        stack.callback(shutil.rmtree, root, True)
        values: dict[str, Any] = {"storage_path": root / "registry", "workers": 1}
        if backend == "postgresql":
            server = os.environ.get(POSTGRES_VARIABLE)
            if not server:
                pytest.skip(f"{POSTGRES_VARIABLE} is not set; scripts/postgres-test-cluster")
            values["database_url"] = stack.enter_context(schema(server))
        if auth != "auth-off":
            htpasswd = root / "htpasswd"
            for username, password in PASSWORDS.items():
                add_user(htpasswd, username, password, scheme=Scheme.BCRYPT, rounds=4)
            values["auth"] = {
                "htpasswd": {"path": str(htpasswd)},
                "access": ACCESS,
                "login_limit": LOGIN_LIMIT,
            }
            if auth == "auth-token":
                values["auth"]["token"] = {"service": SERVICE, "lifetime": 3600}
            values.update(SMALL_LIMITS)
        settings = Settings(**values)
        Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
        upgrade(settings.metadata_url)
        registry = Fuzzed(settings, backend, auth)
        stack.callback(registry.close)
        yield registry
