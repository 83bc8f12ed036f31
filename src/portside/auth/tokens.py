"""Registry bearer tokens as distribution's token specification defines them: JWTs whose
`access` claim lists the granted actions per resource, issued by us or by an external issuer.

Claims: iss, sub (the username, "" when anonymous), aud (the registry's service name), exp, nbf,
iat, jti and access = [{"type", "name", "actions"}]. The header names the key by `kid`.

Errors, all TokenError:

    TokenMalformed       not a JWT, a header PyJWT refuses (a `kid` that is no string, a `crit`
                         extension it does not know), or claims of the wrong shape
    TokenUnknownKey      no trusted key for its `kid` or `x5c` (nor, where allowed, any other)
    TokenBadSignature    a trusted key but the signature does not match: tampered
      AlgorithmRejected  `none`, HMAC, or an algorithm the key cannot have signed with
    TokenWrongIssuer     iss is not the trusted issuer
    TokenWrongAudience   aud does not name our service
    TokenExpired         exp has passed (beyond the leeway)
    TokenNotYetValid     nbf is still ahead (beyond the leeway)
"""

from __future__ import annotations

import datetime
import json
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import jwt

from portside.auth.base import Access, AuthError, granted_actions
from portside.auth.keys import VERIFY_ALGORITHMS, KeySet, SigningKey, UntrustedChain, compatible

DEFAULT_LIFETIME: Final = 300.0
DEFAULT_LEEWAY: Final = 30.0


class TokenError(AuthError):
    """A bearer token that is not accepted."""


class TokenMalformed(TokenError):
    pass


class TokenUnknownKey(TokenError):
    pass


class TokenBadSignature(TokenError):
    pass


class AlgorithmRejected(TokenBadSignature):
    pass


class TokenWrongIssuer(TokenError):
    pass


class TokenWrongAudience(TokenError):
    pass


class TokenExpired(TokenError):
    pass


class TokenNotYetValid(TokenError):
    pass


def _rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: float
    access: tuple[Access, ...]

    def response(self, refresh_token: str | None = None) -> dict[str, Any]:
        """The token endpoint's JSON body (`token` and `access_token` both, as clients differ)."""
        body: dict[str, Any] = {
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": _rfc3339(self.issued_at),
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        return body


class TokenIssuer:
    """Signs tokens for our registry. Docker clients need `expires_in` of at least 60 seconds."""

    def __init__(
        self,
        key: SigningKey,
        issuer: str,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lifetime < 60:
            raise ValueError("a token lives at least 60 seconds (the spec's minimum expires_in)")
        self.key = key
        self.issuer = issuer
        self.lifetime = lifetime
        self._clock = clock

    def issue(self, subject: str, audience: str, access: Iterable[Access]) -> IssuedToken:
        """A token for `subject` ("" for anonymous) granting `access` on service `audience`."""
        now = int(self._clock())
        access = tuple(access)
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + int(self.lifetime),
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [entry.to_claim() for entry in access],
        }
        headers = {"typ": "JWT", "kid": self.key.kid}
        token = jwt.encode(claims, self.key.private_key, self.key.algorithm, headers=headers)
        return IssuedToken(token, int(self.lifetime), now, access)


@dataclass(frozen=True)
class VerifiedToken:
    subject: str
    issuer: str
    expires_at: int
    jti: str | None
    access: frozenset[Access]
    claims: Mapping[str, Any] = field(repr=False)

    def granted(self, requested: Access) -> frozenset[str]:
        """The actions of `requested` this token grants (its entries for the same resource
        together; `*` grants every action)."""
        actions: set[str] = set()
        for entry in self.access:
            if entry.type == requested.type and entry.name == requested.name:
                actions |= entry.actions
        return granted_actions(actions, requested.actions)

    def allows(self, requested: Access) -> bool:
        """Whether every action of `requested` is granted."""
        return self.granted(requested) == requested.actions


class TokenVerifier:
    """Checks tokens of one issuer for one service: signature by a trusted key, then iss, aud,
    exp and nbf (with `leeway` seconds for clock skew), then the shape of `access`.

    For our own tokens, `KeySet.from_signing_key(key)`; for an external issuer,
    `KeySet.from_pem_bundle(path)` or `KeySet.from_jwks(path_or_data)`."""

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        leeway: float = DEFAULT_LEEWAY,
        algorithms: Iterable[str] = VERIFY_ALGORITHMS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.algorithms = frozenset(algorithms) & VERIFY_ALGORITHMS
        self._clock = clock
        self._jws = jwt.PyJWS()

    def verify(self, token: str) -> VerifiedToken:
        """The token's subject and access; raises a TokenError subclass when it is not valid."""
        payload = self._check_signature(token)
        try:
            claims = json.loads(payload)
        except ValueError as error:
            raise TokenMalformed("the claims are not JSON") from error
        if not isinstance(claims, dict):
            raise TokenMalformed("the claims are not a JSON object")
        self._check_claims(claims)
        try:
            raw_access = claims.get("access") or []
            if not isinstance(raw_access, list):
                raise ValueError("access is not a list")
            access = frozenset(Access.from_claim(entry) for entry in raw_access)
        except (ValueError, AttributeError) as error:
            raise TokenMalformed(f"bad access claim: {error}") from error
        subject, jti = claims.get("sub", ""), claims.get("jti")
        if not isinstance(subject, str):
            raise TokenMalformed("sub is not a string")
        return VerifiedToken(
            subject=subject,
            issuer=claims["iss"],
            expires_at=int(claims["exp"]),
            jti=jti if isinstance(jti, str) else None,
            access=access,
            claims=claims,
        )

    def _check_signature(self, token: str) -> bytes:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            # Not only DecodeError: a `kid` that is no string, a `crit` extension PyJWT does not
            # understand (RFC 7515: refuse the token) are InvalidTokenErrors.
            raise TokenMalformed(f"not a JWT: {error}") from error
        algorithm, kid, x5c = header.get("alg"), header.get("kid"), header.get("x5c")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise AlgorithmRejected(f"algorithm {algorithm!r} is not accepted")
        if x5c is not None:
            now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
            if not isinstance(x5c, list) or not all(isinstance(c, str) for c in x5c):
                raise TokenMalformed("x5c is not a list of strings")
            try:
                candidates, named = [self.keys.resolve_chain(x5c, now)], True
            except UntrustedChain as error:
                raise TokenUnknownKey(str(error)) from error
        else:
            found = self.keys.find(kid if isinstance(kid, str) else None)
            if found is not None:
                candidates, named = [found], True
            elif self.keys.try_each:
                candidates, named = self.keys.public_keys(), False
            else:
                raise TokenUnknownKey(f"no trusted key with kid {kid!r}")
        usable = [key for key in candidates if compatible(algorithm, key)]
        if named and not usable:
            raise AlgorithmRejected(f"the key named by the token does not sign with {algorithm}")
        for key in usable:
            try:
                decoded = self._jws.decode_complete(token, key, algorithms=[algorithm])
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise TokenMalformed(f"unreadable token: {error}") from error
            payload = decoded["payload"]
            assert isinstance(payload, bytes)
            return payload
        if named:
            raise TokenBadSignature("the signature does not match the token")
        raise TokenUnknownKey(f"no trusted key with kid {kid!r} verifies the token")

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") != self.issuer:
            raise TokenWrongIssuer(f"issued by {claims.get('iss')!r}, not {self.issuer!r}")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.audience not in audiences:
            raise TokenWrongAudience(f"meant for {audience!r}, not {self.audience!r}")
        now = self._clock()
        exp, nbf = claims.get("exp"), claims.get("nbf", 0)
        if not _is_number(exp):
            raise TokenMalformed("exp is missing or not a number")
        if not _is_number(nbf):
            raise TokenMalformed("nbf is not a number")
        if now > exp + self.leeway:
            raise TokenExpired(f"expired at {_rfc3339(exp)}")
        if now < nbf - self.leeway:
            raise TokenNotYetValid(f"valid from {_rfc3339(nbf)}")


def _is_number(value: object) -> TypeGuard[float]:
    # Finite: Python's JSON reads `Infinity` and `NaN`, which int() refuses.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def bearer_challenge(
    realm: str, service: str, access: Iterable[Access] = (), *, error: str | None = None
) -> str:
    """The `WWW-Authenticate` value that sends a client to the token endpoint, e.g.
    `Bearer realm="https://r.example/auth/token",service="r.example",scope="repository:a:pull"`.
    `error` is `insufficient_scope` or `invalid_token` (RFC 6750) when a token was presented."""
    parts = [f'realm="{_quote(realm)}"', f'service="{_quote(service)}"']
    scopes = " ".join(entry.scope for entry in access)
    if scopes:
        parts.append(f'scope="{_quote(scopes)}"')
    if error:
        parts.append(f'error="{_quote(error)}"')
    return "Bearer " + ",".join(parts)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
