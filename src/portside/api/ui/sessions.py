"""Logins to the web UI: a random cookie whose SHA-256 the metadata database keeps, with the CSRF
token the session's forms carry, so that every worker and instance knows the session and a
logout ends it everywhere.

    portside_session   the session (HttpOnly, SameSite=Lax, Secure over TLS, path /ui)
    portside_csrf      an anonymous visitor's CSRF token, for the login form (SameSite=Strict)
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Final

from starlette.requests import HTTPConnection
from starlette.responses import Response

from portside.api.urls import PublicAddress
from portside.metadata.base import SessionStore, UiSession

SESSION_COOKIE: Final = "portside_session"
CSRF_COOKIE: Final = "portside_csrf"
COOKIE_PATH: Final = "/ui"
TOKEN_BYTES: Final = 32
TOKEN_LENGTH: Final = 43  # of secrets.token_urlsafe(TOKEN_BYTES)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def well_formed(token: str | None) -> bool:
    """Whether a cookie's value could be a token of ours (anything else is not looked up)."""
    return (
        token is not None
        and len(token) == TOKEN_LENGTH
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in token)
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class Sessions:
    def __init__(self, store: SessionStore, lifetime: timedelta) -> None:
        self._store = store
        self.lifetime = lifetime

    async def start(self, username: str) -> tuple[str, UiSession]:
        """A new session for username (never one the client brought: no fixation); the
        cookie's value and the session."""
        token = new_token()
        now = datetime.now(UTC)
        session = UiSession(token_hash(token), username, new_token(), now, now + self.lifetime)
        await self._store.add_session(session)
        return token, session

    async def find(self, token: str | None) -> UiSession | None:
        """The session of a cookie's value, unless it has expired."""
        if not well_formed(token):
            return None
        assert token is not None
        session = await self._store.find_session(token_hash(token))
        if session is None or session.expires_at <= datetime.now(UTC):
            return None
        return session

    async def end(self, token: str | None) -> None:
        if well_formed(token):
            assert token is not None
            await self._store.delete_session(token_hash(token))


def secure(connection: HTTPConnection, public: PublicAddress) -> bool:
    """Whether the visitor reached us over TLS (directly, or as public_url or a trusted proxy
    says): cookies are then Secure."""
    return public.base_url(connection).startswith("https:")


def set_session_cookie(response: Response, token: str, lifetime: timedelta, tls: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        path=COOKIE_PATH,
        secure=tls,
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(response: Response, tls: bool) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, secure=tls, httponly=True, samesite="lax"
    )


def set_csrf_cookie(response: Response, token: str, tls: bool) -> None:
    # A session cookie (no max_age): the login form it protects is filled in one sitting.
    response.set_cookie(
        CSRF_COOKIE, token, path=COOKIE_PATH, secure=tls, httponly=True, samesite="strict"
    )
