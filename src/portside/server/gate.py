"""The gate each route asks before its endpoint runs (api/guard.py): who is calling (Basic
credentials, a bearer token, or nobody; auth/authenticator.py) and whether auth/policy.py lets
them do what the route needs; refusals are the spec's errors with the challenge that tells a
client how to log in.

    no credentials, not allowed    401 UNAUTHORIZED   WWW-Authenticate: Basic realm=... (Basic
                                                      mode) or Bearer realm,service,scope (token)
    bad credentials or token       401 UNAUTHORIZED   the same (Bearer: error="invalid_token")
    token without the scope        401 UNAUTHORIZED   Bearer ...,error="insufficient_scope"
    a login without permission     403 DENIED
    /metrics from elsewhere        403 DENIED, or 401 with `auth` (server/metrics_access.py)
    too many failed logins         429 TOOMANYREQUESTS  Retry-After

Query parameters and the Authorization header are read through api/query.py, as the handlers
read them, so that a value given twice cannot be checked as one and served as another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from starlette.requests import HTTPConnection
from starlette.types import Scope

from portside.api import query
from portside.api.credentials import Basic, Bearer, client_address, parse_authorization
from portside.api.guard import ACTOR, ADMITTED, Admission, Need
from portside.api.origins import note_login, origin
from portside.api.urls import PublicAddress
from portside.auth.authenticator import Authenticator, LoginFailed, LoginThrottled
from portside.auth.base import (
    ALL,
    CATALOG,
    DELETE,
    PULL,
    PUSH,
    REGISTRY,
    Access,
    AuthError,
    Identity,
)
from portside.auth.base import repository as repository_access
from portside.auth.policy import ANONYMOUS, Caller, Policy
from portside.auth.tokens import bearer_challenge
from portside.registry.errors import Denied, NameInvalid, TooManyRequests, Unauthorized
from portside.registry.events import Recorder
from portside.registry.names import parse_name
from portside.server.metrics_access import MetricsReaders

CATALOG_ACCESS: Final = Access(REGISTRY, CATALOG, frozenset({ALL}))
# The actions on the repository in the path that each need asks for.
ACTIONS: Final = {
    Need.PULL: (PULL,),
    Need.PULL_PUSH: (PULL, PUSH),
    Need.MOUNT: (PULL, PUSH),
    Need.DELETE: (DELETE,),
}


@dataclass(frozen=True)
class Challenges:
    """The WWW-Authenticate values: Basic, or Bearer naming the token service."""

    basic_realm: str
    token_realm: str | None = None  # a path (made absolute per request) or a URL; None: Basic
    service: str = ""
    public: PublicAddress = field(default_factory=PublicAddress)

    def make(self, scope: Scope, accesses: list[Access], error: str | None = None) -> str:
        if self.token_realm is None:
            return f'Basic realm="{_quote(self.basic_realm)}"'
        realm = self.token_realm
        if realm.startswith("/"):
            # spec: clients need an absolute URL; built from public_url or the request.
            realm = self.public.base_url(HTTPConnection(scope)) + realm
        return bearer_challenge(realm, self.service, accesses, error=error)


class RouteGate:
    """api.guard.Gate: admits a request or raises the RegistryError to answer it with."""

    def __init__(
        self,
        authenticator: Authenticator,
        policy: Policy,
        challenges: Challenges,
        *,
        search_requires_auth: bool = False,
        trust_forwarded_headers: bool = False,
        events: Recorder | None = None,
        metrics_readers: MetricsReaders | None = None,
    ) -> None:
        """events: where logins and refusals are audited; None, nowhere."""
        self.authenticator = authenticator
        self.policy = policy
        self.challenges = challenges
        self.search_requires_auth = search_requires_auth
        self.trust_forwarded_headers = trust_forwarded_headers
        self.events = events or Recorder()
        self.metrics_readers = metrics_readers

    async def admit(self, scope: Scope, need: Need) -> Admission:
        if need is Need.OPEN:
            return ADMITTED
        if need is Need.METRICS:
            return await self._admit_metrics_reader(scope)
        caller = await self.caller(scope)
        name = _name(caller)
        if name is not None:
            scope[ACTOR] = name
            if need is Need.LOGIN and caller.token is None:
                self._note_login(scope, name, "login")
        actions = ACTIONS.get(need)
        if actions is not None:
            # Checked first: a name outside the grammar is NAME_INVALID to anyone, and never
            # reaches a challenge header, which carries Latin-1 only.
            name = parse_name(scope["path_params"]["name"])
            self._require(scope, caller, repository_access(name, *actions))
            if need is Need.MOUNT and self._mount_refused(scope, caller, name):
                return Admission(mount_refused=True)
            return ADMITTED
        login = need is Need.LOGIN or (need is Need.SEARCH and self.search_requires_auth)
        if login and not caller.presented:
            raise Unauthorized(challenge=self.challenges.make(scope, []))
        if need is Need.CATALOG:
            self._require(scope, caller, CATALOG_ACCESS)
        if need is Need.LOGIN:
            return ADMITTED
        challenge = None
        if need is Need.SEARCH and not caller.presented:
            challenge = self.challenges.make(scope, [])
        return Admission(visible=self.policy.visible(caller), login_challenge=challenge)

    # Who ----------------------------------------------------------------------------------------

    async def caller(self, scope: Scope) -> Caller:
        """The caller by its Authorization header; raises Unauthorized for credentials that do
        not hold, TooManyRequests while its address or username is throttled."""
        try:
            raw = query.authorization(scope)
        except Unauthorized as error:
            raise Unauthorized(error.detail, challenge=self.challenges.make(scope, [])) from None
        if raw is None:
            return ANONYMOUS
        credentials = parse_authorization(raw.decode("latin-1"))
        if credentials is None:
            return ANONYMOUS
        if isinstance(credentials, Basic):
            return self.policy.logged_in(await self._login(scope, credentials))
        if isinstance(credentials, Bearer):
            try:
                verified = self.authenticator.bearer(credentials.token)
                robot = None
                if not self.policy.external_tokens:  # another issuer's robots are not ours
                    robot = await self.authenticator.robot_bearer(verified)
            except AuthError:
                challenge = self.challenges.make(scope, [], "invalid_token")
                raise Unauthorized("invalid token", challenge=challenge) from None
            return self.policy.bearing(verified, robot)
        raise Unauthorized("unreadable credentials", challenge=self.challenges.make(scope, []))

    async def _login(self, scope: Scope, credentials: Basic) -> Identity:
        address = client_address(scope, self.trust_forwarded_headers)
        try:
            return await self.authenticator.login(
                credentials.username, credentials.password, address
            )
        except LoginThrottled as error:
            self._note_login(scope, credentials.username, "login-throttled")
            raise TooManyRequests("too many failed logins", retry_after=error.retry_after) from None
        except LoginFailed:
            self._note_login(scope, credentials.username, "login-failed")
            challenge = self.challenges.make(scope, [])
            raise Unauthorized("wrong username or password", challenge=challenge) from None

    def _note_login(self, scope: Scope, username: str, outcome: str) -> None:
        connection = HTTPConnection(scope)
        note_login(self.events, connection, self.challenges.public, username, outcome, "basic")

    # What ---------------------------------------------------------------------------------------

    async def _admit_metrics_reader(self, scope: Scope) -> Admission:
        readers = self.metrics_readers
        if readers is not None and readers.by_address(scope):
            return ADMITTED
        caller = await self.caller(scope)
        if not caller.presented:
            raise Unauthorized("metrics need a login", challenge=self.challenges.make(scope, []))
        identity = caller.identity
        if identity is None and caller.subject is not None:
            identity = self.policy.authorizer.identity(caller.subject)
        if readers is not None and identity is not None and readers.by_identity(identity):
            return ADMITTED
        raise Denied("not a reader of metrics (metrics.users, metrics.groups)")

    def _require(self, scope: Scope, caller: Caller, access: Access) -> None:
        if self.policy.allows(caller, access):
            return
        if caller.token is not None:
            challenge = self.challenges.make(scope, [access], "insufficient_scope")
            raise Unauthorized(_detail(access), challenge=challenge)
        if caller.presented:
            if self.events.notes:
                caller_origin = origin(HTTPConnection(scope), self.challenges.public)
                repository = access.name if access.type == "repository" else ""
                self.events.note("denied", caller_origin, repository, {"scope": access.scope})
            raise Denied(_detail(access))
        raise Unauthorized(_detail(access), challenge=self.challenges.make(scope, [access]))

    def _mount_refused(self, scope: Scope, caller: Caller, name: str) -> bool:
        """Whether a mount's `from` is one the caller may not pull. A token without it gets
        distribution's answer: 401 with a challenge for both repositories, so the client fetches
        a wider token and mounts; anyone else falls back to a plain upload (spec: 202), as does a
        token whose user could not get that scope anyway."""
        source = query.one(scope, "from")
        if not query.has(scope, "mount") or source is None:
            return False
        try:
            access = repository_access(parse_name(source), PULL)
        except NameInvalid:
            return False  # the handler makes it a plain upload, as for any `from` it cannot use
        if PULL in self.policy.granted(caller, access):
            return False
        if caller.token is not None and self.policy.could_pull(caller, access):
            accesses = [repository_access(name, *ACTIONS[Need.PULL_PUSH]), access]
            challenge = self.challenges.make(scope, accesses, "insufficient_scope")
            raise Unauthorized(_detail(access), challenge=challenge)
        return True


def _name(caller: Caller) -> str | None:
    """Who the caller is, for events and the audit log: the user, or the token's subject."""
    if caller.identity is not None:
        return caller.identity.username
    if caller.token is not None and caller.token.subject:
        return caller.token.subject
    return None


def _detail(access: Access) -> list[dict[str, str]]:
    """distribution's detail of an auth error: one entry per action asked for."""
    return [
        {"Type": access.type, "Name": access.name, "Action": action}
        for action in sorted(access.actions)
    ]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class OpenGate:
    """api.guard.Gate of a registry without `auth`: everyone may do everything, but read the
    metrics from an address `metrics.allow` does not name."""

    def __init__(self, metrics_readers: MetricsReaders) -> None:
        self.metrics_readers = metrics_readers

    async def admit(self, scope: Scope, need: Need) -> Admission:
        if need is Need.METRICS and not self.metrics_readers.by_address(scope):
            raise Denied("metrics are readable from the networks of metrics.allow only")
        return ADMITTED
