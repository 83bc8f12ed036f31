"""Who is visiting the web UI and what they may see and do: the user of a session cookie, judged
by the same Policy as the API's callers, or an anonymous visitor, who sees what anonymous pull
allows. On an open registry (no `auth`) there are no logins and everyone may do everything."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from portside.api.guard import ACTOR
from portside.api.ui.sessions import CSRF_COOKIE, SESSION_COOKIE, Sessions, new_token, well_formed
from portside.api.urls import PublicAddress
from portside.auth.authenticator import Authenticator
from portside.auth.base import Identity, repository
from portside.auth.policy import ANONYMOUS, Caller, Policy, Visible
from portside.auth.robots import PREFIX as ROBOT_PREFIX
from portside.metadata.base import UiSession


@dataclass(frozen=True, slots=True)
class Visitor:
    username: str | None  # None: anonymous
    caller: Caller
    csrf: str  # the token every form of this visitor carries
    new_csrf_cookie: bool = False  # an anonymous visitor's token, to be set as its cookie


class Ui:
    """What the UI's pages need besides the registry, built once by the server."""

    def __init__(
        self,
        sessions: Sessions,
        public: PublicAddress,
        *,
        authenticator: Authenticator | None = None,
        policy: Policy | None = None,
        delete_enabled: bool = True,
    ) -> None:
        """authenticator and policy: those of the registry's `auth`; None, an open registry."""
        self.sessions = sessions
        self.public = public
        self.authenticator = authenticator
        self.policy = policy
        self.delete_enabled = delete_enabled

    @property
    def logins(self) -> bool:
        """Whether anyone can log in: there is an htpasswd file (with only another issuer's
        tokens, the UI is for anonymous visitors)."""
        return self.authenticator is not None and self.authenticator.htpasswd is not None

    async def visitor(self, request: Request) -> Visitor:
        """The visitor of a request: its session's user, while the session lasts and the user
        could still log in (see _identity); else anonymous."""
        if self.logins:
            assert self.authenticator is not None
            assert self.policy is not None
            session = await self.sessions.find(request.cookies.get(SESSION_COOKIE))
            identity = None if session is None else await self._identity(session)
            if session is not None and identity is not None:
                request.scope[ACTOR] = session.username  # who the audit log names
                return Visitor(session.username, self.policy.logged_in(identity), session.csrf)
        csrf = request.cookies.get(CSRF_COOKIE)
        if well_formed(csrf):
            assert csrf is not None
            return Visitor(None, ANONYMOUS, csrf)
        return Visitor(None, ANONYMOUS, new_token(), new_csrf_cookie=True)

    async def _identity(self, session: UiSession) -> Identity | None:
        """Who the session's user is while they could still log in: a user still in the
        htpasswd file, or a robot account neither revoked, expired nor made again since."""
        assert self.authenticator is not None
        assert self.policy is not None
        username, robots = session.username, self.authenticator.robots
        if robots is not None and username.startswith(ROBOT_PREFIX):
            return await robots.bearer(username, session.created_at.timestamp())
        if self.authenticator.known_user(username):
            return self.policy.authorizer.identity(username)
        return None

    def visible(self, visitor: Visitor) -> Visible | None:
        """Which repositories the visitor may see (pull); None: all."""
        return None if self.policy is None else self.policy.visible(visitor.caller)

    def may(self, visitor: Visitor, name: str, action: str) -> bool:
        if self.policy is None:
            return True
        return self.policy.allows(visitor.caller, repository(name, action))

    def sees_everything(self, visitor: Visitor) -> bool:
        """Whether the visitor may pull every repository, and so see registry-wide figures."""
        if self.policy is None:
            return True
        identity = visitor.caller.identity
        return self.policy.authorizer.pulls_everything(identity)


def ui(request: Request) -> Ui:
    found: Ui = request.app.state.ui
    return found
