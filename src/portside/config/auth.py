"""The `auth` section of the settings: htpasswd, the built-in token service, an external token
issuer, repository permissions (`access`), login limits. Shapes and checks only; the auth
package acts on them (`portside.auth.permissions` documents the `access` section's YAML).

No `auth` section: an open registry. With one, requests are authenticated with Basic
credentials from `htpasswd` and, in token mode (`token` or `external_token`), with bearer tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)

Action = Literal["pull", "push", "delete", "*"]

DEFAULT_TOKEN_PATH = "/auth/token"  # noqa: S105 - a path, not a password
# Paths the registry API owns: a token endpoint there would shadow it.
_RESERVED_PATHS = ("/v2", "/v1")


def _check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        if not pattern or pattern != pattern.strip():
            raise ValueError(f"a repository pattern cannot be empty or padded: {pattern!r}")
    return patterns


# Permissions ------------------------------------------------------------------------------------


class Subjects(BaseModel):
    """Whom something is granted to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[str, ...] = Field(default=(), description="Usernames.")
    groups: tuple[str, ...] = Field(default=(), description="Group names.")
    authenticated: bool = Field(default=False, description="Every user who logged in.")


class Rule(Subjects):
    """Actions on the repositories matching any of `repositories`, for the subjects named."""

    repositories: tuple[str, ...] = Field(min_length=1, description="Repository name patterns.")
    actions: tuple[Action, ...] = Field(min_length=1, description="pull, push, delete or *.")

    _check = field_validator("repositories")(_check_patterns)

    @model_validator(mode="after")
    def _names_someone(self) -> Rule:
        if not (self.users or self.groups or self.authenticated):
            raise ValueError("a rule must name users, groups or `authenticated: true`")
        return self


class CatalogAccess(Subjects):
    """Who may list every repository name (`registry:catalog:*`)."""

    authenticated: bool = Field(default=True, description="Every user who logged in.")
    anonymous: bool = Field(default=False, description="Anyone, without logging in.")


class AccessConfig(BaseModel):
    """The `access` section: see `portside.auth.permissions` for its YAML form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anonymous_pull: tuple[str, ...] = Field(
        default=(), description="Repository patterns anyone may pull without logging in."
    )
    user_namespaces: bool = Field(
        default=False, description="Give each user every action under `<username>/*`."
    )
    groups: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Group name to the usernames in it."
    )
    rules: tuple[Rule, ...] = Field(default=(), description="Grants; they only add up.")
    catalog: CatalogAccess = Field(
        default_factory=CatalogAccess,
        description="Who may list repositories (/v2/_catalog: users, groups, authenticated, "
        "anonymous); each caller sees only those it may pull.",
    )

    _check = field_validator("anonymous_pull")(_check_patterns)


# Authentication -----------------------------------------------------------------------------


class HtpasswdSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Field(
        description="The htpasswd file (any format Apache's htpasswd writes; bcrypt is what "
        "`portside user add` writes). Read again whenever it changes."
    )
    realm: str = Field(default="Portside registry", description="The realm of the Basic challenge.")
    allow_plaintext: bool = Field(
        default=False, description="Accept entries that hold the password itself (htpasswd -p)."
    )
    cache_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a worker trusts credentials it verified (so a slow hash such as "
        "bcrypt is not paid on every request); 0: verify every request.",
    )


class TokenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    realm: str = Field(
        default=DEFAULT_TOKEN_PATH,
        description="Where clients get tokens: a path Portside serves its token endpoint at, or "
        "an absolute URL whose path it serves (behind a proxy).",
    )
    service: str = Field(
        default="portside",
        min_length=1,
        description="The service name in challenges and the tokens' audience.",
    )
    issuer: str = Field(
        default="portside", min_length=1, description="The issuer (iss) of the tokens."
    )
    key_path: Path | None = Field(
        default=None,
        description="PEM private key that signs tokens (EC P-256 or RSA); made on first start "
        "(mode 0600) if missing; default `<storage_path>/auth/token-key.pem`.",
    )
    algorithm: Literal["ES256", "RS256"] = Field(
        default="ES256", description="Algorithm of a key made on first start."
    )
    lifetime: int = Field(
        default=300,
        ge=60,
        le=86_400,
        description="Seconds a token is valid (expires_in), 60 at least.",
    )
    refresh_lifetime: int | None = Field(
        default=90 * 86_400,
        ge=60,
        description="Seconds a refresh token (offline_token, OAuth2) is valid; null: until "
        "the user is removed.",
    )

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        """Keys of earlier versions, accepted with a warning and dropped (so the settings the
        workers load back carry them no more, and warn once)."""
        if isinstance(data, dict) and "refresh_tokens_path" in data:
            data = {key: value for key, value in data.items() if key != "refresh_tokens_path"}
            log.warning(
                "auth.token.refresh_tokens_path is no longer used: refresh tokens are kept in "
                "the metadata database; remove the key (and the file it names)"
            )
        return data

    @field_validator("realm")
    @classmethod
    def _realm_is_a_path_or_url(cls, value: str) -> str:
        token_path(value)
        return value


class ExternalTokenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    realm: str = Field(description="URL of the external token service clients are sent to.")
    service: str = Field(min_length=1, description="Our service name: the tokens' audience.")
    issuer: str = Field(min_length=1, description="The issuer (iss) its tokens carry.")
    rootcertbundle: Path | None = Field(
        default=None,
        description="PEM bundle of the certificates (or public keys) whose keys sign its tokens.",
    )
    jwks: Path | None = Field(default=None, description="Or a JWKS file of its signing keys.")

    @field_validator("realm")
    @classmethod
    def _realm_is_a_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"expected an absolute http(s) URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> ExternalTokenSettings:
        if (self.rootcertbundle is None) == (self.jwks is None):
            raise ValueError("external_token needs rootcertbundle or jwks (one of them)")
        return self


class LoginLimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins a client address, or a username, may have in the window "
        "before it gets 429 (counted across all workers and instances, in the metadata database).",
    )
    window_seconds: float = Field(default=60.0, gt=0, description="The sliding window, in seconds.")


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    htpasswd: HtpasswdSettings | None = Field(
        default=None, description="Users and passwords (Basic auth, and the token service's)."
    )
    token: TokenSettings | None = Field(
        default=None,
        description="The built-in token service (Docker registry token specification): "
        "clients log in there and send bearer tokens.",
    )
    external_token: ExternalTokenSettings | None = Field(
        default=None,
        description="Or accept tokens of an external issuer (as distribution's auth.token).",
    )
    access: AccessConfig = Field(
        default_factory=AccessConfig,
        description="Who may pull, push and delete what; nothing unless granted.",
    )
    search_requires_auth: bool = Field(
        default=False,
        description="Make /v1/search require a login (it shows only repositories "
        "the caller may pull either way).",
    )
    login_limit: LoginLimitSettings = Field(
        default_factory=LoginLimitSettings, description="Limits on failed logins."
    )

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.token is not None and self.external_token is not None:
            raise ValueError("auth: give token (the built-in service) or external_token, not both")
        if self.token is not None and self.htpasswd is None:
            raise ValueError(
                "auth.token issues tokens to the users of an htpasswd file: set auth.htpasswd "
                "(or use auth.external_token for another issuer's tokens)"
            )
        if self.htpasswd is None and self.external_token is None:
            raise ValueError("auth needs htpasswd or external_token: nobody could log in")
        return self


def token_path(realm: str) -> str:
    """The path the built-in token endpoint is served at, from its realm (a path or a URL);
    raises ValueError when it is neither or collides with the registry's own paths."""
    parts = urlsplit(realm)
    if (parts.scheme or parts.netloc) and (
        parts.scheme not in ("http", "https") or not parts.netloc
    ):
        raise ValueError(f"expected a path or an absolute http(s) URL, got {realm!r}")
    path = parts.path
    if not path.startswith("/") or path == "/" or parts.query or parts.fragment:
        raise ValueError(f"expected a path such as /auth/token, or a URL with one, got {realm!r}")
    if any(path == reserved or path.startswith(reserved + "/") for reserved in _RESERVED_PATHS):
        raise ValueError(f"the token endpoint cannot be under /v1 or /v2: {realm!r}")
    return path
