"""The auth middleware: who is calling (Basic credentials, a bearer token, or nobody) and whether
they may do what the route asks (server/access.py); refusals go out as the spec's errors with the
challenge that tells a client how to log in.

    no credentials, not allowed    401 UNAUTHORIZED   WWW-Authenticate: Basic realm=... (Basic
                                                      mode) or Bearer realm,service,scope (token)
    bad credentials or token       401 UNAUTHORIZED   the same (Bearer: error="invalid_token")
    token without the scope        401 UNAUTHORIZED   Bearer ...,error="insufficient_scope"
    a login without permission     403 DENIED
    too many failed logins         429 TOOMANYREQUESTS  Retry-After

Allowed requests go on unchanged, except a mount from a repository the caller may not pull,
which the request state marks so that the handler makes it a plain upload (202, as the spec
says), and listings, which get the caller's `visible_repository` predicate in the request state.
Query parameters and the Authorization header are read through api/query.py, as the handlers
read them, so that a value given twice cannot be checked as one and served as another.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from portside.api import query, token
from portside.api.credentials import Basic, Bearer, client_address, parse_authorization
from portside.api.requests import LOGIN_CHALLENGE, MOUNT_REFUSED
from portside.api.urls import PublicAddress
from portside.auth.authenticator import Authenticator, LoginFailed, LoginThrottled
from portside.auth.base import PULL, Access, AuthError, Identity, repository
from portside.auth.htpasswd import HtpasswdFile
from portside.auth.keys import KeySet, SigningKey, load_or_create_signing_key
from portside.auth.permissions import Authorizer
from portside.auth.ratelimit import FailureWindow, LoginLimiter
from portside.auth.refresh import RefreshTokens
from portside.auth.tokens import TokenIssuer, TokenVerifier, VerifiedToken, bearer_challenge
from portside.config.auth import TokenSettings
from portside.config.auth import token_path as token_path_of
from portside.config.settings import Settings
from portside.metadata.base import TokenStore
from portside.registry.errors import Denied, RegistryError, TooManyRequests, Unauthorized
from portside.server.access import (
    CATALOG_ACCESS,
    MOUNTS,
    PULL_PUSH,
    Need,
    match,
    requirement,
)
from portside.server.errors import error_response
from portside.server.refresh import MetadataRefreshTokenStore

# The request state key that api.requests.visible_repository reads.
VISIBLE: str = "visible_repository"


@dataclass(frozen=True)
class Caller:
    """Who sent the request. `presented` is False for anonymous requests."""

    presented: bool
    identity: Identity | None = None  # judged by the access config; None: anonymous
    token: VerifiedToken | None = None  # a bearer token: its grants decide
    subject: str | None = None  # the user our own token names (its Identity made when needed)
    external: bool = False  # the token is another issuer's, whose subjects we do not know
    # (repository, actions) -> allowed, for a caller kept between requests (RecentLogins, the
    # bearer cache): its grants do not change while it is kept.
    decisions: dict[tuple[str, frozenset[str]], bool] = field(
        default_factory=dict, compare=False, repr=False
    )


@dataclass(frozen=True)
class Challenges:
    """The WWW-Authenticate values: Basic, or Bearer naming the token service."""

    basic_realm: str
    token_realm: str | None = None  # a path (made absolute per request) or a URL; None: Basic
    service: str = ""
    public: PublicAddress = field(default_factory=PublicAddress)

    def make(self, scope: Scope, access: Access | None, error: str | None = None) -> str:
        return self.make_many(scope, [access] if access else [], error)

    def make_many(self, scope: Scope, accesses: list[Access], error: str | None = None) -> str:
        if self.token_realm is None:
            return f'Basic realm="{_quote(self.basic_realm)}"'
        realm = self.token_realm
        if realm.startswith("/"):
            # spec: clients need an absolute URL; built from public_url or the request.
            realm = self.public.base_url(HTTPConnection(scope)) + realm
        return bearer_challenge(realm, self.service, accesses, error=error)


FileVersion = tuple[int, int, int, int, int] | None
RECENT_LOGINS_MAX = 4096
BEARERS_MAX = 2048
ALLOWED_MEMO_MAX = 16384
DECISIONS_MAX = 32  # per caller: bounded memory whatever the callers ask for
# How often RecentLogins looks at the htpasswd file: a changed or removed password stops
# working within this many seconds (a stat on every request costs more than all the rest).
FILE_CHECK_SECONDS = 1.0


class RecentLogins:
    """The Basic headers that logged in lately, by a keyed BLAKE2 hash of the header: a request
    that carries one again within `ttl` seconds, while the htpasswd file is unchanged (looked at
    every FILE_CHECK_SECONDS), skips decoding it, the htpasswd cache's HMAC and its `stat`.
    Failures are never remembered."""

    def __init__(
        self, path: Path, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = os.fspath(path)
        self.ttl = ttl
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[float, FileVersion, Caller]] = {}
        self._version: FileVersion = None
        self._checked_at = -math.inf

    def key(self, header: bytes) -> bytes:
        return hashlib.blake2b(header, key=self._key, digest_size=16).digest()

    def version(self) -> FileVersion:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def get(self, key: bytes) -> Caller | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        expires, version, caller = hit
        now = self._clock()
        if now >= self._checked_at + FILE_CHECK_SECONDS:
            self._version, self._checked_at = self.version(), now
        if expires > now and version == self._version:
            return caller
        del self._entries[key]
        return None

    def put(self, key: bytes, caller: Caller, version: FileVersion) -> None:
        """Remember a login, with the file's version from before it was checked."""
        if len(self._entries) >= RECENT_LOGINS_MAX:
            self._entries.clear()
        now = self._clock()
        self._entries[key] = (now + self.ttl, version, caller)
        self._version, self._checked_at = version, now


class Gate:
    """Admits a request or raises the RegistryError to answer it with."""

    def __init__(
        self,
        authenticator: Authenticator,
        challenges: Challenges,
        *,
        token_path: str | None = None,
        external_tokens: bool = False,
        search_requires_auth: bool = False,
        trust_forwarded_headers: bool = False,
    ) -> None:
        """token_path: where the built-in token endpoint is served, if it is; external_tokens:
        whether bearer tokens come from another issuer (their subjects mean nothing here)."""
        self.authenticator = authenticator
        self.authorizer = authenticator.authorizer
        self.challenges = challenges
        self.token_path = token_path
        self.external_tokens = external_tokens
        self.search_requires_auth = search_requires_auth
        self.trust_forwarded_headers = trust_forwarded_headers
        htpasswd = authenticator.htpasswd
        self.recent = None
        if htpasswd is not None and htpasswd.cache_ttl > 0:
            self.recent = RecentLogins(htpasswd.path, htpasswd.cache_ttl)
        # The access config does not change while the process runs: its answers can be kept.
        self._allowed: dict[tuple[Identity | None, Access], frozenset[str]] = {}
        # Callers by a keyed hash of their bearer token, until it expires: each token is
        # verified (and hashed with SHA-256 by the Authenticator) once per process.
        self._hash_key = secrets.token_bytes(32)
        self._bearers: dict[bytes, Caller] = {}
        self.anonymous = Caller(presented=False)  # one per gate: it keeps decisions

    async def admit(self, scope: Scope) -> None:
        if scope["path"] == self.token_path:
            return  # the token endpoint checks the credentials it is given itself
        found = match(scope)
        if found is None:
            return  # the router answers 404 or 405
        endpoint, params = found
        need = requirement(endpoint)
        if need is Need.OPEN:
            return
        caller = await self.caller(scope)
        login = need is Need.LOGIN or (need is Need.SEARCH and self.search_requires_auth)
        if login and not caller.presented:
            raise Unauthorized(challenge=self.challenges.make(scope, None))
        if need is Need.SEARCH:
            _set_state(scope, VISIBLE, self._visible(caller))
            if not caller.presented:
                _set_state(scope, LOGIN_CHALLENGE, self.challenges.make(scope, None))
        elif need is Need.CATALOG:
            self._require(scope, caller, CATALOG_ACCESS)
            _set_state(scope, VISIBLE, self._visible(caller))
        elif need is Need.DENY:
            if caller.presented:
                raise Denied({"path": scope["path"][:300]})
            raise Unauthorized(challenge=self.challenges.make(scope, None))
        elif isinstance(need, frozenset):
            self._require_repository(scope, caller, params["name"], need)
            if endpoint is MOUNTS:
                self._check_mount(scope, caller, params["name"])

    # Who ----------------------------------------------------------------------------------------

    async def caller(self, scope: Scope) -> Caller:
        """The caller by its Authorization header; raises Unauthorized for credentials that do
        not hold, TooManyRequests while its address or username is throttled."""
        try:
            raw = query.authorization(scope)
        except Unauthorized as error:
            raise Unauthorized(error.detail, challenge=self.challenges.make(scope, None)) from None
        if raw is None:
            return self.anonymous
        recent = self.recent if raw[:6].lower() == b"basic " else None
        if recent is not None:
            key = recent.key(raw)
            known = recent.get(key)
            if known is not None:
                return known
        bearer_key = None
        if raw[:7].lower() == b"bearer ":
            bearer_key = hashlib.blake2b(raw, key=self._hash_key, digest_size=16).digest()
            kept = self._bearers.get(bearer_key)
            if kept is not None and kept.token is not None:
                if kept.token.expires_at > time.time():
                    return kept
                del self._bearers[bearer_key]
        credentials = parse_authorization(raw.decode("latin-1"))
        if credentials is None:
            return self.anonymous
        if isinstance(credentials, Basic):
            version = recent.version() if recent is not None else None
            caller = Caller(presented=True, identity=await self._login(scope, credentials))
            if recent is not None:
                recent.put(key, caller, version)
            return caller
        if isinstance(credentials, Bearer):
            try:
                verified = self.authenticator.bearer(credentials.token)
            except AuthError:
                challenge = self.challenges.make(scope, None, "invalid_token")
                raise Unauthorized("invalid token", challenge=challenge) from None
            external = self.external_tokens
            subject = None if external or not verified.subject else verified.subject
            caller = Caller(presented=True, token=verified, subject=subject, external=external)
            if bearer_key is not None:
                if len(self._bearers) >= BEARERS_MAX:
                    self._bearers.clear()
                self._bearers[bearer_key] = caller
            return caller
        raise Unauthorized("unreadable credentials", challenge=self.challenges.make(scope, None))

    async def _login(self, scope: Scope, credentials: Basic) -> Identity:
        address = client_address(scope, self.trust_forwarded_headers)
        try:
            return await self.authenticator.login(
                credentials.username, credentials.password, address
            )
        except LoginThrottled as error:
            raise TooManyRequests("too many failed logins", retry_after=error.retry_after) from None
        except LoginFailed:
            challenge = self.challenges.make(scope, None)
            raise Unauthorized("wrong username or password", challenge=challenge) from None

    # What ---------------------------------------------------------------------------------------

    def granted(self, caller: Caller, access: Access) -> frozenset[str]:
        """The actions of `access` the caller has: a token's grants (spec: the token decides),
        plus what anyone may do; else what the access config gives its identity."""
        if caller.token is not None:
            return caller.token.granted(access) | self._allowed_to(None, access)
        return self._allowed_to(caller.identity, access)

    def _allowed_to(self, identity: Identity | None, access: Access) -> frozenset[str]:
        memo = (identity, access)
        found = self._allowed.get(memo)
        if found is None:
            if len(self._allowed) >= ALLOWED_MEMO_MAX:
                self._allowed.clear()
            found = self._allowed[memo] = self.authorizer.allowed(identity, access)
        return found

    def _require_repository(
        self, scope: Scope, caller: Caller, name: str, actions: frozenset[str]
    ) -> None:
        """`_require` of `actions` on repository `name`, answered from the caller's memo."""
        decisions = caller.decisions
        ok = decisions.get((name, actions))
        if ok is None:
            if len(decisions) >= DECISIONS_MAX:
                decisions.clear()
            access = repository(name, *actions)
            ok = decisions[name, actions] = self.granted(caller, access) == actions
        if not ok:
            self._require(scope, caller, repository(name, *actions))

    def _require(self, scope: Scope, caller: Caller, access: Access) -> None:
        if self.granted(caller, access) == access.actions:
            return
        if caller.token is not None:
            challenge = self.challenges.make(scope, access, "insufficient_scope")
            raise Unauthorized(_detail(access), challenge=challenge)
        if caller.presented:
            raise Denied(_detail(access))
        raise Unauthorized(_detail(access), challenge=self.challenges.make(scope, access))

    def _visible(self, caller: Caller) -> Callable[[str], bool] | None:
        """Which repositories a listing shows the caller: those its user may pull now (our own
        tokens name the user). Another issuer's token that grants the catalog shows them all,
        as distribution does: its users are not ours to judge."""
        if caller.external:
            return None
        identity = caller.identity
        if caller.subject is not None:
            identity = self.authorizer.identity(caller.subject)

        def visible(name: str) -> bool:  # not memoized: a listing would flush the memo
            return bool(self.authorizer.allowed(identity, repository(name, PULL)))

        return visible

    def _check_mount(self, scope: Scope, caller: Caller, name: str) -> None:
        """A mount needs pull on its `from` too. A token without it gets distribution's answer:
        401 with a challenge for both repositories, so the client fetches a wider token and
        mounts; anyone else falls back to a plain upload (spec: 202), as does a token whose user
        could not get that scope anyway."""
        source = query.one(scope, "from")
        if not query.has(scope, "mount") or source is None:
            return
        access = repository(source, PULL)
        if PULL in self.granted(caller, access):
            return
        if caller.token is not None and self._could_pull(caller, access):
            challenge = self.challenges.make_many(
                scope, [repository(name, *PULL_PUSH), access], "insufficient_scope"
            )
            raise Unauthorized(_detail(access), challenge=challenge)
        _set_state(scope, MOUNT_REFUSED, True)

    def _could_pull(self, caller: Caller, access: Access) -> bool:
        """Whether the token service would grant the caller's user pull on access: always
        assumed for another issuer's token, whose users are not ours to judge."""
        if caller.external or caller.subject is None:
            return caller.external
        return PULL in self._allowed_to(self.authorizer.identity(caller.subject), access)


class AuthMiddleware:
    """Runs the Gate before the app; inside RegistryMiddleware, so refusals are logged and carry
    Docker-Distribution-API-Version like any answer."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self.gate.admit(scope)
            except RegistryError as error:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _set_state(scope: Scope, key: str, value: object) -> None:
    # A copy: the server may share one lifespan state dict between requests.
    scope["state"] = {**scope.get("state", {}), key: value}


def _detail(access: Access) -> list[dict[str, str]]:
    """distribution's detail of an auth error: one entry per action asked for."""
    return [
        {"Type": access.type, "Name": access.name, "Action": action}
        for action in sorted(access.actions)
    ]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# Wiring -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthParts:
    """What create_app adds for an `auth` section: the gate, and the token endpoint's route and
    service when the built-in one is on."""

    gate: Gate
    routes: list[BaseRoute]
    token_service: token.TokenService | None


def build(settings: Settings, metadata: TokenStore) -> AuthParts | None:
    """The auth parts for these settings; None for an open registry. Makes the token signing
    key on first start; the token service keeps its refresh tokens in metadata."""
    auth = settings.auth
    if auth is None:
        return None
    htpasswd = None
    if auth.htpasswd is not None:
        htpasswd = HtpasswdFile(
            auth.htpasswd.path,
            allow_plaintext=auth.htpasswd.allow_plaintext,
            cache_ttl=auth.htpasswd.cache_seconds,
        )
    limit = auth.login_limit
    limiter = LoginLimiter(
        per_address=FailureWindow(limit.failures, limit.window_seconds),
        per_username=FailureWindow(limit.failures, limit.window_seconds),
    )
    basic_realm = auth.htpasswd.realm if auth.htpasswd is not None else "Portside registry"
    public = PublicAddress(settings.public_url, settings.trust_forwarded_headers)
    authorizer = Authorizer(auth.access)
    if auth.token is not None:
        algorithm = auth.token.algorithm
        key = load_or_create_signing_key(settings.token_key_path, algorithm=algorithm)
        keys, issuer, service = KeySet.from_signing_key(key), auth.token.issuer, auth.token.service
        challenges = Challenges(basic_realm, auth.token.realm, service, public)
    elif auth.external_token is not None:
        external = auth.external_token
        if external.rootcertbundle is not None:
            keys = KeySet.from_pem_bundle(external.rootcertbundle)
        else:
            assert external.jwks is not None  # the settings ask for one of the two
            keys = KeySet.from_jwks(external.jwks)
        issuer, service = external.issuer, external.service
        challenges = Challenges(basic_realm, external.realm, service, public)
    else:
        keys = None
        challenges = Challenges(basic_realm, public=public)
    verifier = None
    if keys is not None:
        verifier = TokenVerifier(keys, issuer=issuer, audience=service)
    authenticator = Authenticator(authorizer, htpasswd=htpasswd, verifier=verifier, limiter=limiter)
    routes: list[BaseRoute] = []
    token_service = token_path = None
    if auth.token is not None:
        token_path = token_path_of(auth.token.realm)
        token_service = _token_service(
            settings, auth.token, authenticator, key, basic_realm, metadata
        )
        routes = [
            Route(token_path, token.get_token, methods=["GET"]),
            Route(token_path, token.post_token, methods=["POST"]),
        ]
    gate = Gate(
        authenticator,
        challenges,
        token_path=token_path,
        external_tokens=auth.external_token is not None,
        search_requires_auth=auth.search_requires_auth,
        trust_forwarded_headers=settings.trust_forwarded_headers,
    )
    return AuthParts(gate, routes, token_service)


def _token_service(
    settings: Settings,
    config: TokenSettings,
    authenticator: Authenticator,
    key: SigningKey,
    basic_realm: str,
    metadata: TokenStore,
) -> token.TokenService:
    # In the metadata database: every worker and every instance sharing it accepts the tokens.
    store = MetadataRefreshTokenStore(metadata)
    refresh = RefreshTokens(store, lifetime=config.refresh_lifetime)
    return token.TokenService(
        authenticator,
        TokenIssuer(key, config.issuer, lifetime=config.lifetime),
        refresh,
        config.service,
        basic_realm,
        settings.trust_forwarded_headers,
    )
