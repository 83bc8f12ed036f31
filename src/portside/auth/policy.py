"""Who a caller is and what it may do: a token's grants (spec: the token decides) plus what
anyone may do, or else what the access config gives its identity; which repositories a listing
shows it; and whether the token service would widen its token for a mount.

The access config does not change while the process runs, so its answers are kept, one cache
for every caller. No HTTP here: server/gate.py asks and chooses the responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from portside.auth.base import PULL, Access, Identity, repository
from portside.auth.permissions import Authorizer
from portside.auth.tokens import VerifiedToken

DECISIONS_MAX: Final = 16384

# Whether a caller may see (pull) a repository, by name.
Visible = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request. `presented` is False for anonymous requests."""

    presented: bool
    # judged by the access config (a robot's: by its scopes); None: anonymous. With a token:
    # the robot it was issued to, if it was.
    identity: Identity | None = None
    token: VerifiedToken | None = None  # a bearer token: its grants decide
    subject: str | None = None  # the user our own token names (its Identity made when needed)
    external: bool = False  # the token is another issuer's, whose subjects we do not know


ANONYMOUS: Final = Caller(presented=False)


class Policy:
    """Decides what callers may do from an Authorizer and, for bearer tokens, their grants."""

    def __init__(self, authorizer: Authorizer, *, external_tokens: bool = False) -> None:
        """external_tokens: bearer tokens come from another issuer (their subjects mean nothing
        here)."""
        self.authorizer = authorizer
        self.external_tokens = external_tokens
        self._decisions: dict[tuple[Identity | None, Access], frozenset[str]] = {}

    def logged_in(self, identity: Identity) -> Caller:
        return Caller(presented=True, identity=identity)

    def bearing(self, token: VerifiedToken, robot: Identity | None = None) -> Caller:
        """A bearer token's caller; robot: the robot account our token names (its scopes
        decide what listings show it)."""
        external = self.external_tokens
        subject = None if external or not token.subject else token.subject
        return Caller(
            presented=True, token=token, subject=subject, external=external, identity=robot
        )

    def granted(self, caller: Caller, access: Access) -> frozenset[str]:
        """The actions of `access` the caller has: a token's grants plus what anyone may do;
        else what the access config gives its identity."""
        if caller.token is not None:
            return caller.token.granted(access) | self._allowed(None, access)
        return self._allowed(caller.identity, access)

    def allows(self, caller: Caller, access: Access) -> bool:
        return self.granted(caller, access) == access.actions

    def _allowed(self, identity: Identity | None, access: Access) -> frozenset[str]:
        key = (identity, access)
        found = self._decisions.get(key)
        if found is None:
            if len(self._decisions) >= DECISIONS_MAX:
                self._decisions.clear()
            found = self._decisions[key] = self.authorizer.allowed(identity, access)
        return found

    def visible(self, caller: Caller) -> Visible | None:
        """Which repositories a listing shows the caller: those its user may pull now (our own
        tokens name the user); None shows them all. Another issuer's token that grants the
        catalog shows them all, as distribution does: its users are not ours to judge."""
        if caller.external:
            return None
        identity = caller.identity
        if identity is None and caller.subject is not None:
            identity = self.authorizer.identity(caller.subject)
        authorizer = self.authorizer

        def visible(name: str) -> bool:  # not kept: a listing would flush the decisions
            return bool(authorizer.allowed(identity, repository(name, PULL)))

        return visible

    def could_pull(self, caller: Caller, access: Access) -> bool:
        """Whether the token service would grant the caller's user pull on access: always
        assumed for another issuer's token, whose users are not ours to judge."""
        if caller.external or caller.subject is None:
            return caller.external
        identity = caller.identity or self.authorizer.identity(caller.subject)
        return PULL in self._allowed(identity, access)
