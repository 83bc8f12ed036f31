"""Wiring for an `auth` section: the gate every route asks (server/gate.py) and, when the built-in
token service is on, its endpoint's path and the service it works with. Auth and metadata know
nothing of each other: refresh tokens and failed logins reach the metadata database through
server/refresh.py and server/throttle.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from portside.api import token
from portside.api.urls import PublicAddress
from portside.auth.authenticator import DEFAULT_LOGIN_TTL, Authenticator
from portside.auth.htpasswd import HtpasswdFile
from portside.auth.keys import KeySet, SigningKey, load_or_create_signing_key
from portside.auth.permissions import Authorizer
from portside.auth.policy import Policy
from portside.auth.ratelimit import LoginLimiter
from portside.auth.refresh import RefreshTokens
from portside.auth.robots import Robots
from portside.auth.tokens import TokenIssuer, TokenVerifier
from portside.config.auth import TokenSettings
from portside.config.auth import token_path as token_path_of
from portside.config.settings import Settings
from portside.metadata.base import RobotStore, ThrottleStore, TokenStore
from portside.registry.events import Recorder
from portside.server.gate import Challenges, RouteGate
from portside.server.metrics_access import MetricsReaders
from portside.server.refresh import MetadataRefreshTokenStore
from portside.server.robots import MetadataRobotRecords
from portside.server.throttle import MetadataFailureLog


class AuthStore(TokenStore, ThrottleStore, RobotStore, Protocol):
    """What auth keeps in the metadata database: refresh tokens, failed logins, robots."""


@dataclass(frozen=True)
class AuthParts:
    """What create_app adds for an `auth` section: the gate, and the token endpoint's path and
    service when the built-in one is on."""

    gate: RouteGate
    token_path: str | None
    token_service: token.TokenService | None


def build(
    settings: Settings,
    metadata: AuthStore,
    events: Recorder | None = None,
    metrics_readers: MetricsReaders | None = None,
) -> AuthParts | None:
    """The auth parts for these settings; None for an open registry. Makes the token signing
    key on first start; the token service keeps its refresh tokens in metadata. events: where
    the gate audits logins and refusals; metrics_readers: who may read /metrics."""
    auth = settings.auth
    if auth is None:
        return None
    htpasswd, login_ttl = None, DEFAULT_LOGIN_TTL
    if auth.htpasswd is not None:
        htpasswd = HtpasswdFile(auth.htpasswd.path, allow_plaintext=auth.htpasswd.allow_plaintext)
        login_ttl = auth.htpasswd.cache_seconds
    limit = auth.login_limit
    limiter = LoginLimiter(MetadataFailureLog(metadata), limit.failures, limit.window_seconds)
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
    authenticator = Authenticator(
        authorizer,
        htpasswd=htpasswd,
        verifier=verifier,
        limiter=limiter,
        robots=Robots(MetadataRobotRecords(metadata)),
        login_ttl=login_ttl,
    )
    token_service = token_path = None
    if auth.token is not None:
        token_path = token_path_of(auth.token.realm)
        token_service = _token_service(
            settings, auth.token, authenticator, key, basic_realm, metadata
        )
    gate = RouteGate(
        authenticator,
        Policy(authorizer, external_tokens=auth.external_token is not None),
        challenges,
        search_requires_auth=auth.search_requires_auth,
        trust_forwarded_headers=settings.trust_forwarded_headers,
        events=events,
        metrics_readers=metrics_readers,
    )
    return AuthParts(gate, token_path, token_service)


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
