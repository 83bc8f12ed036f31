"""The built-in token service of distribution's token specification (docs/spec/auth/token.md,
oauth.md): credentials in, a signed JWT out whose access is what was asked for, cut down to what
the caller may do.

    GET  ?service=&scope=...&account=&offline_token=true&client_id=   Basic credentials, or none
    POST grant_type=password&username=&password=&access_type=offline   (form, OAuth2)
    POST grant_type=refresh_token&refresh_token=

Anonymous requests get a token holding only the anonymous grants. The answer is
`{"token","access_token","expires_in","issued_at","refresh_token"?}` (POST adds `scope`).
Credentials arrive in the header, the query or the body and are never logged; the access log
writes the path only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portside.api import query, requests
from portside.api.credentials import Basic, client_address, parse_authorization
from portside.api.origins import note_login
from portside.auth.authenticator import Authenticator, LoginFailed, LoginThrottled
from portside.auth.base import Access, Identity, InvalidScope, parse_scopes
from portside.auth.refresh import RefreshTokenInvalid, RefreshTokens
from portside.auth.tokens import TokenIssuer
from portside.registry.errors import TokenRequestInvalid, TooManyRequests, Unauthorized

FORM_MAX: Final = 64 * 1024
# RFC 6749 5.1: "The authorization server MUST include ... Cache-Control: no-store".
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class TokenService:
    """What the endpoint works with; server/app.py builds it from the settings."""

    authenticator: Authenticator
    issuer: TokenIssuer
    refresh: RefreshTokens
    service: str
    basic_realm: str
    trust_forwarded_headers: bool = False

    def challenge(self) -> str:
        return f'Basic realm="{_quote(self.basic_realm)}"'


def _token_service(request: Request) -> TokenService:
    found: TokenService = request.app.state.token_service
    return found


async def get_token(request: Request) -> Response:
    ts = _token_service(request)
    _check_service(ts, query.one(request.scope, "service"))
    scopes = _scopes(request.query_params.getlist("scope"))  # the one parameter given repeatedly
    identity = None
    try:
        raw = query.authorization(request.scope)
    except Unauthorized as error:
        raise Unauthorized(error.detail, challenge=ts.challenge()) from None
    credentials = parse_authorization(raw.decode("latin-1") if raw is not None else None)
    if credentials is not None:
        if not isinstance(credentials, Basic):
            raise Unauthorized("Basic credentials expected", challenge=ts.challenge())
        identity = await _login(ts, request, credentials.username, credentials.password)
    account = query.one(request.scope, "account")
    if account and identity is not None and account != identity.username:
        raise TokenRequestInvalid({"account": "is not the user who logged in"})
    offline_token = query.one(request.scope, "offline_token") or ""
    offline = offline_token.lower() == "true" and identity is not None
    return await _answer(ts, identity, scopes, offline=offline, oauth=False)


async def post_token(request: Request) -> Response:
    ts = _token_service(request)
    form = _form(await requests.small_body(request, FORM_MAX))
    _check_service(ts, form.get("service"))
    scopes = _scopes([form.get("scope", "")])
    grant_type = form.get("grant_type")
    if grant_type == "password":
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            raise TokenRequestInvalid({"grant_type": "password needs username and password"})
        identity = await _login(ts, request, username, password)
        offline = form.get("access_type") == "offline"
    elif grant_type == "refresh_token":
        identity = await _redeem(ts, form.get("refresh_token"))
        offline = False  # the refresh token the client holds stays valid
    else:
        raise TokenRequestInvalid({"grant_type": "expected password or refresh_token"})
    return await _answer(ts, identity, scopes, offline=offline, oauth=True)


async def _answer(
    ts: TokenService, identity: Identity | None, scopes: list[Access], *, offline: bool, oauth: bool
) -> Response:
    granted = ts.authenticator.authorizer.grant(identity, scopes)
    issued = ts.issuer.issue(identity.username if identity else "", ts.service, granted)
    refresh_token = None
    # Not for a robot, whose secret is its long-lived credential already.
    if offline and identity is not None and identity.scopes is None:
        refresh_token = await ts.refresh.issue(identity.username, ts.service)
    body = issued.response(refresh_token)
    if oauth:
        body["scope"] = " ".join(access.scope for access in granted)
    return JSONResponse(body, headers=NO_STORE)


async def _login(ts: TokenService, request: Request, username: str, password: str) -> Identity:
    address = client_address(request.scope, ts.trust_forwarded_headers)
    try:
        identity = await ts.authenticator.login(username, password, address)
    except LoginThrottled as error:
        _note_login(request, username, "login-throttled")
        raise TooManyRequests("too many failed logins", retry_after=error.retry_after) from None
    except LoginFailed:
        _note_login(request, username, "login-failed")
        raise Unauthorized("wrong username or password", challenge=ts.challenge()) from None
    _note_login(request, username, "login")
    return identity


def _note_login(request: Request, username: str, outcome: str) -> None:
    events = requests.registry(request).events
    note_login(events, request, request.app.state.public_address, username, outcome, "token")


async def _redeem(ts: TokenService, token: str | None) -> Identity:
    if not token:
        raise TokenRequestInvalid({"grant_type": "refresh_token needs refresh_token"})
    try:
        username = await ts.refresh.redeem(token, ts.service)
    except RefreshTokenInvalid:
        raise Unauthorized("invalid refresh token", challenge=ts.challenge()) from None
    if not ts.authenticator.known_user(username):
        await ts.refresh.revoke_user(username)  # all of them: the user has left the htpasswd file
        raise Unauthorized("invalid refresh token", challenge=ts.challenge())
    return ts.authenticator.authorizer.identity(username)


def _check_service(ts: TokenService, service: str | None) -> None:
    if service and service != ts.service:
        raise TokenRequestInvalid({"service": f"this token service serves {ts.service!r}"})


def _scopes(values: Iterable[str]) -> list[Access]:
    try:
        return parse_scopes(values)
    except InvalidScope as error:
        raise TokenRequestInvalid({"scope": str(error)[:300]}) from None


def _form(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, first value of each field."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise TokenRequestInvalid({"body": "not UTF-8 form data"}) from None
    return {name: values[0] for name, values in fields.items()}


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
