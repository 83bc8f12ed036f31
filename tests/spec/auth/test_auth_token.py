"""Token auth (distribution's token specification): the built-in token service, bearer tokens on
the registry API, every way a token is refused, and tokens of an external issuer."""

from __future__ import annotations

import base64
import datetime
import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from auth_setup import Registry, RegistryFactory, auth_section, basic, bearer
from helpers import assert_error, digest_of, push_blob, push_image, random_bytes

from portside.auth.base import repository
from portside.auth.htpasswd import remove_user
from portside.auth.keys import KeySet, SigningKey
from portside.auth.tokens import TokenIssuer, TokenVerifier

SERVICE = "registry.test"
REALM = "http://registry.test/auth/token"


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


async def get_token(
    registry: Registry, *scopes: str, user: str | None = None, **params: str
) -> dict[str, Any]:
    headers = basic(user) if user else {}
    response = await registry.client.get(
        "/auth/token",
        params={"service": SERVICE, "scope": list(scopes), **params},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def signing_key(registry: Registry) -> SigningKey:
    return SigningKey.from_pem(registry.settings.token_key_path.read_bytes())


def assert_bearer_challenge(
    response: httpx.Response, scope: str | None = None, error: str | None = None
) -> None:
    assert_error(response, 401, "UNAUTHORIZED")
    expected = f'Bearer realm="{REALM}",service="{SERVICE}"'
    if scope:
        expected += f',scope="{scope}"'
    if error:
        expected += f',error="{error}"'
    assert response.headers["www-authenticate"] == expected


# Challenges --------------------------------------------------------------------------------


async def test_version_check_sends_clients_to_the_token_service(token_registry: Registry) -> None:
    response = await token_registry.client.get("/v2/")
    assert_bearer_challenge(response)
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"


async def test_a_refused_request_names_the_scope_it_needs(token_registry: Registry) -> None:
    response = await token_registry.client.post("/v2/team/app/blobs/uploads/")
    assert_bearer_challenge(response, "repository:team/app:pull,push")
    catalog = await token_registry.client.get("/v2/_catalog")
    assert_bearer_challenge(catalog, "registry:catalog:*")


async def test_the_realm_is_absolute_from_public_url(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(
        auth_section(htpasswd, token={"service": SERVICE}), public_url="https://r.example"
    )
    response = await registry.client.get("/v2/")
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="https://r.example/auth/token",service="{SERVICE}"'
    )


async def test_the_token_endpoint_path_follows_the_realm(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    realm = "https://auth.example/v9/token"
    registry = await make_registry(auth_section(htpasswd, token={"realm": realm}))

    challenge = (await registry.client.get("/v2/")).headers["www-authenticate"]
    token = await registry.client.get("/v9/token", headers=basic("alice"))

    assert challenge == f'Bearer realm="{realm}",service="portside"'
    assert token.status_code == 200
    assert (await registry.client.get("/auth/token")).status_code == 404


# The token endpoint ----------------------------------------------------------------------------


async def test_a_token_holds_what_was_asked_cut_to_what_is_allowed(
    token_registry: Registry,
) -> None:
    before = int(time.time())
    body = await get_token(
        token_registry,
        "repository:team/app:pull,push,delete",
        "repository:other/secret:pull repository:public/base:pull",
        "registry:catalog:*",
        user="alice",
    )

    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["access_token"] == body["token"]
    assert body["expires_in"] == 300
    issued = datetime.datetime.fromisoformat(body["issued_at"].replace("Z", "+00:00"))
    assert before - 1 <= issued.timestamp() <= time.time() + 1
    decoded = claims(body["token"])
    assert decoded["sub"] == "alice"
    assert decoded["aud"] == SERVICE
    assert decoded["iss"] == "portside"
    assert decoded["exp"] - decoded["iat"] == 300
    assert decoded["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "public/base", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    verifier = TokenVerifier(
        KeySet.from_signing_key(signing_key(token_registry)), issuer="portside", audience=SERVICE
    )
    assert verifier.verify(body["token"]).allows(repository("team/app", "pull", "push"))


async def test_an_anonymous_token_holds_only_anonymous_grants(token_registry: Registry) -> None:
    body = await get_token(
        token_registry, "repository:public/base:pull,push", "repository:team/app:pull"
    )
    decoded = claims(body["token"])
    assert decoded["sub"] == ""
    assert decoded["access"] == [{"type": "repository", "name": "public/base", "actions": ["pull"]}]
    assert "refresh_token" not in body


async def test_offline_token_gives_a_refresh_token_that_the_oauth2_grant_takes(
    token_registry: Registry,
) -> None:
    body = await get_token(
        token_registry, "repository:team/app:pull", user="alice", offline_token="true"
    )
    refresh_token = body["refresh_token"]

    response = await token_registry.client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "service": SERVICE,
            "scope": "repository:team/app:push repository:other/x:pull",
            "client_id": "docker",
        },
    )

    assert response.status_code == 200, response.text
    refreshed = response.json()
    assert refreshed["scope"] == "repository:team/app:push"
    assert "refresh_token" not in refreshed
    assert claims(refreshed["access_token"])["sub"] == "alice"
    assert claims(refreshed["access_token"])["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["push"]}
    ]


async def test_the_oauth2_password_grant(token_registry: Registry) -> None:
    form = {
        "grant_type": "password",
        "username": "carol",
        "password": "carol-Secret-3",
        "service": SERVICE,
        "scope": "repository:team/app:pull,push",
        "client_id": "test",
        "access_type": "offline",
    }
    response = await token_registry.client.post("/auth/token", data=form)
    wrong = await token_registry.client.post("/auth/token", data=form | {"password": "x"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "repository:team/app:pull"
    assert body["refresh_token"]
    assert body["expires_in"] == 300
    assert_error(wrong, 401, "UNAUTHORIZED")


async def test_refresh_tokens_of_removed_users_are_refused(
    token_registry: Registry, htpasswd: Path
) -> None:
    body = await get_token(token_registry, user="dave", offline_token="true")
    remove_user(htpasswd, "dave")

    response = await token_registry.client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
    )
    unknown = await token_registry.client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": "made-up"}
    )

    assert_error(response, 401, "UNAUTHORIZED")
    assert_error(unknown, 401, "UNAUTHORIZED")


async def test_a_wrong_password_at_the_token_endpoint_is_401_with_a_basic_challenge(
    token_registry: Registry,
) -> None:
    response = await token_registry.client.get(
        "/auth/token", params={"service": SERVICE}, headers=basic("alice", "wrong")
    )
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == 'Basic realm="Portside registry"'


async def test_the_token_endpoint_limits_failed_logins(
    make_registry: RegistryFactory, htpasswd: Path
) -> None:
    registry = await make_registry(
        auth_section(htpasswd, token={}, login_limit={"failures": 2, "window_seconds": 30})
    )
    for _ in range(2):
        response = await registry.client.get("/auth/token", headers=basic("alice", "nope"))
        assert response.status_code == 401
    throttled = await registry.client.get("/auth/token", headers=basic("alice"))
    assert_error(throttled, 429, "TOOMANYREQUESTS")
    assert 0 < int(throttled.headers["retry-after"]) <= 30


@pytest.mark.parametrize(
    ("params", "form"),
    [
        ({"scope": "repository:team/app"}, None),
        ({"service": "another.registry"}, None),
        (None, {"grant_type": "client_credentials"}),
        (None, {"grant_type": "password", "username": "alice"}),
        (None, {"grant_type": "refresh_token"}),
        (None, {"grant_type": "password", "username": "alice", "password": "x", "scope": "a:b"}),
    ],
    ids=["bad-scope", "other-service", "grant-type", "no-password", "no-token", "post-scope"],
)
async def test_malformed_token_requests_are_400(
    token_registry: Registry, params: dict[str, str] | None, form: dict[str, str] | None
) -> None:
    if form is None:
        response = await token_registry.client.get(
            "/auth/token", params=params, headers=basic("alice")
        )
    else:
        response = await token_registry.client.post("/auth/token", data=form)
    assert_error(response, 400, "UNSUPPORTED")


async def test_account_must_be_the_user_who_logged_in(token_registry: Registry) -> None:
    same = await token_registry.client.get(
        "/auth/token", params={"account": "alice"}, headers=basic("alice")
    )
    other = await token_registry.client.get(
        "/auth/token", params={"account": "admin"}, headers=basic("alice")
    )
    assert same.status_code == 200
    assert_error(other, 400, "UNSUPPORTED")


# Tokens on the registry API ------------------------------------------------------------------


async def test_a_token_lets_its_holder_push_and_pull(token_registry: Registry) -> None:
    body = await get_token(token_registry, "repository:team/app:pull,push", user="alice")
    client = await token_registry.client_with(bearer(body["token"]))

    pushed = await push_image(client, "team/app", "v1", layers=1)

    assert (await client.get(f"/v2/team/app/manifests/{pushed.digest}")).status_code == 200
    assert (await client.get("/v2/")).status_code == 200


async def test_a_token_for_one_repository_is_refused_on_another(token_registry: Registry) -> None:
    admin = await token_registry.as_user("admin")  # Basic credentials work in token mode too
    pushed = await push_image(admin, "team/other", "v1", layers=0)
    body = await get_token(token_registry, "repository:team/app:pull,push", user="alice")

    response = await token_registry.client.get(
        f"/v2/team/other/manifests/{pushed.digest}", headers=bearer(body["token"])
    )

    assert_bearer_challenge(response, "repository:team/other:pull", "insufficient_scope")


async def test_a_mount_whose_token_lacks_pull_on_from_asks_for_the_wider_scope(
    token_registry: Registry,
) -> None:
    """As distribution: the mount needs pull on `from` too, so a token without it gets 401
    insufficient_scope naming both repositories; the client fetches that token and mounts."""
    admin = await token_registry.as_user("admin")
    shared = await push_blob(admin, "team/app", random_bytes(128))
    narrow = await get_token(token_registry, "repository:alice/copy:pull,push", user="alice")
    mount = {"mount": shared, "from": "team/app"}

    refused = await token_registry.client.post(
        "/v2/alice/copy/blobs/uploads/", params=mount, headers=bearer(narrow["token"])
    )
    scopes = "repository:alice/copy:pull,push repository:team/app:pull"
    wide = await get_token(token_registry, *scopes.split(), user="alice")
    mounted = await token_registry.client.post(
        "/v2/alice/copy/blobs/uploads/", params=mount, headers=bearer(wide["token"])
    )

    assert_bearer_challenge(refused, scopes, "insufficient_scope")
    assert mounted.status_code == 201, mounted.text
    assert (await admin.head(f"/v2/alice/copy/blobs/{shared}")).status_code == 200


async def test_a_mount_from_what_the_user_may_never_pull_becomes_an_upload(
    token_registry: Registry,
) -> None:
    """No token the service would give alice has pull on other/secret: no point sending her for
    one. spec end-11: the registry "MUST" fall back to a plain upload (202)."""
    admin = await token_registry.as_user("admin")
    secret = await push_blob(admin, "other/secret", random_bytes(128))
    token = await get_token(token_registry, "repository:alice/copy:pull,push", user="alice")

    response = await token_registry.client.post(
        "/v2/alice/copy/blobs/uploads/",
        params={"mount": secret, "from": "other/secret"},
        headers=bearer(token["token"]),
    )

    assert response.status_code == 202, response.text
    assert (await admin.head(f"/v2/alice/copy/blobs/{secret}")).status_code == 404


async def test_a_pull_only_token_cannot_push_and_stores_nothing(token_registry: Registry) -> None:
    body = await get_token(token_registry, "repository:team/app:pull,push", user="carol")
    assert claims(body["token"])["access"][0]["actions"] == ["pull"]
    data = random_bytes(128)

    response = await token_registry.client.post(
        "/v2/team/app/blobs/uploads/",
        params={"digest": digest_of(data)},
        content=data,
        headers=bearer(body["token"]),
    )

    assert_bearer_challenge(response, "repository:team/app:pull,push", "insufficient_scope")
    admin = await token_registry.as_user("admin")
    assert (await admin.head(f"/v2/team/app/blobs/{digest_of(data)}")).status_code == 404


def forged(registry: Registry, key: SigningKey | None = None, **changes: Any) -> str:
    """A token for alice with pull,push on team/app, signed by `key` (default: the registry's),
    from an issuer whose clock reads `clock` if given."""
    clock = changes.pop("clock", time.time)
    issuer = TokenIssuer(key or signing_key(registry), changes.pop("iss", "portside"), clock=clock)
    return issuer.issue("alice", SERVICE, [repository("team/app", "pull", "push")]).token


async def refused_push(registry: Registry, token: str) -> httpx.Response:
    data = random_bytes(64)
    response = await registry.client.post(
        "/v2/team/app/blobs/uploads/",
        params={"digest": digest_of(data)},
        content=data,
        headers=bearer(token),
    )
    admin = await registry.as_user("admin")
    assert (await admin.head(f"/v2/team/app/blobs/{digest_of(data)}")).status_code == 404
    return response


def tamper(token: str) -> str:
    """The token with its access claim widened, its signature kept."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["access"][0]["name"] = "other/secret"
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


@pytest.mark.parametrize(
    "make_token",
    [
        lambda registry: forged(registry, clock=lambda: time.time() - 3600),
        lambda registry: tamper(forged(registry)),
        lambda registry: forged(registry, SigningKey.generate()),
        lambda registry: forged(registry, iss="someone-else"),
        lambda registry: "not-a-jwt",
        lambda registry: jwt.encode({"sub": "alice"}, "s" * 32, algorithm="HS256"),
    ],
    ids=["expired", "tampered", "unknown-key", "other-issuer", "garbage", "hmac"],
)
async def test_invalid_tokens_are_401_invalid_token_and_change_nothing(
    token_registry: Registry, make_token: Any
) -> None:
    valid = await token_registry.client_with(bearer(forged(token_registry)))
    assert (await valid.post("/v2/team/app/blobs/uploads/")).status_code == 202

    response = await refused_push(token_registry, make_token(token_registry))
    assert_bearer_challenge(response, error="invalid_token")


async def test_a_verified_token_is_not_verified_again(
    token_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    verify = TokenVerifier.verify

    def spy(self: TokenVerifier, token: str) -> Any:
        calls.append(token)
        return verify(self, token)

    monkeypatch.setattr(TokenVerifier, "verify", spy)
    body = await get_token(token_registry, "repository:public/base:pull", user="alice")
    client = await token_registry.client_with(bearer(body["token"]))

    for _ in range(5):
        assert (await client.get("/v2/public/base/tags/list")).status_code == 404

    assert calls == [body["token"]]


async def test_the_catalog_with_a_token_shows_what_its_user_may_pull(
    token_registry: Registry,
) -> None:
    admin = await token_registry.as_user("admin")
    for name in ("other/secret", "public/base", "team/app"):
        await push_image(admin, name, "v1", layers=0)
    body = await get_token(token_registry, "registry:catalog:*", user="carol")

    response = await token_registry.client.get("/v2/_catalog", headers=bearer(body["token"]))

    assert response.json() == {"repositories": ["public/base", "team/app"]}


# Keys ----------------------------------------------------------------------------------------


async def test_the_signing_key_is_made_on_first_start_with_mode_0600_and_kept(
    make_registry: RegistryFactory, htpasswd: Path, tmp_path: Path
) -> None:
    key_path = tmp_path / "keys" / "token.pem"
    section = auth_section(htpasswd, token={"key_path": str(key_path), "service": SERVICE})
    first = await make_registry(section)
    body = await get_token(first, "repository:team/app:pull", user="alice")
    second = await make_registry(section)

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    response = await second.client.get("/v2/", headers=bearer(body["token"]))
    assert response.status_code == 200


async def test_a_given_rsa_key_signs_the_tokens(
    make_registry: RegistryFactory, htpasswd: Path, tmp_path: Path
) -> None:
    key = SigningKey.generate("RS256")
    key_path = tmp_path / "rsa.pem"
    key_path.write_bytes(key.to_pem())
    token = {"key_path": str(key_path), "service": SERVICE}
    registry = await make_registry(auth_section(htpasswd, token=token))

    body = await get_token(registry, user="alice")

    assert jwt.get_unverified_header(body["token"])["alg"] == "RS256"
    assert jwt.get_unverified_header(body["token"])["kid"] == key.kid


# An external issuer ----------------------------------------------------------------------------


async def external_issuer_registry(
    make_registry: RegistryFactory, tmp_path: Path, trust: str
) -> tuple[Registry, SigningKey]:
    """A registry that trusts the tokens of an external issuer "auth.example", by its
    certificate bundle or its JWKS file; and the issuer's key."""
    key = SigningKey.generate()
    trusted = tmp_path / "issuer.pem"
    if trust == "rootcertbundle":
        trusted.write_bytes(key.certificate())
    else:
        trusted.write_text(json.dumps(key.jwks()))
    external = {
        "realm": "https://auth.example/token",
        "service": SERVICE,
        "issuer": "auth.example",
        trust: str(trusted),
    }
    return await make_registry({"external_token": external}), key


@pytest.mark.parametrize("trust", ["rootcertbundle", "jwks"])
async def test_tokens_of_an_external_issuer_are_accepted(
    make_registry: RegistryFactory, tmp_path: Path, trust: str
) -> None:
    registry, key = await external_issuer_registry(make_registry, tmp_path, trust)
    issuer = TokenIssuer(key, "auth.example")
    token = issuer.issue("someone", SERVICE, [repository("any/repo", "pull", "push")]).token
    stranger = TokenIssuer(SigningKey.generate(), "auth.example")
    forged_token = stranger.issue("someone", SERVICE, [repository("any/repo", "push")]).token

    challenge = await registry.client.get("/v2/")
    client = await registry.client_with(bearer(token))
    pushed = await push_image(client, "any/repo", "v1", layers=1)
    refused = await registry.client.post(
        "/v2/any/repo/blobs/uploads/", headers=bearer(forged_token)
    )

    assert challenge.headers["www-authenticate"] == (
        f'Bearer realm="https://auth.example/token",service="{SERVICE}"'
    )
    assert (await client.get(f"/v2/any/repo/manifests/{pushed.digest}")).status_code == 200
    assert refused.status_code == 401
    assert (await registry.client.get("/auth/token")).status_code == 404


# Malformed token headers -----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_header(key: SigningKey, header: dict[str, Any], issuer: str = "portside") -> str:
    """A token for alice with pull,push on team/app, signed by `key` but under `header` as given:
    headers PyJWT refuses to encode (a `kid` that is no string, a `crit` it does not know)."""
    now = int(time.time())
    payload = {
        "iss": issuer,
        "sub": "alice",
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
    }
    encoded = [_b64url(json.dumps(part).encode()) for part in (header, payload)]
    signing_input = ".".join(encoded)
    algorithm = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    signature = algorithm.sign(signing_input.encode(), key.private_key)
    return f"{signing_input}.{_b64url(signature)}"


def unsigned(header: bytes) -> str:
    """A token whose header segment encodes `header` (raw bytes), with an empty claim set."""
    return f"{_b64url(header)}.{_b64url(b'{}')}.{_b64url(b'signature')}"


# Each makes a token from (signing key, issuer). PyJWT refuses each with an InvalidTokenError (or
# a DecodeError) that is not a signature mismatch, on our own tokens and an external issuer's.
MALFORMED_HEADERS: dict[str, Any] = {
    "kid-number": lambda key, iss: with_header(key, {"alg": "ES256", "kid": 5}, iss),
    "kid-null": lambda key, iss: with_header(key, {"alg": "ES256", "kid": None}, iss),
    "kid-object": lambda key, iss: with_header(key, {"alg": "ES256", "kid": {"a": key.kid}}, iss),
    "kid-list": lambda key, iss: with_header(key, {"alg": "ES256", "kid": [key.kid]}, iss),
    "crit-unknown": lambda key, iss: with_header(
        key, {"alg": "ES256", "kid": key.kid, "crit": ["exp"], "exp": 1}, iss
    ),
    "crit-not-a-list": lambda key, iss: with_header(
        key, {"alg": "ES256", "kid": key.kid, "crit": "b64"}, iss
    ),
    "crit-empty": lambda key, iss: with_header(
        key, {"alg": "ES256", "kid": key.kid, "crit": []}, iss
    ),
    "crit-missing-extension": lambda key, iss: with_header(
        key, {"alg": "ES256", "kid": key.kid, "crit": ["b64"]}, iss
    ),
    "b64-false": lambda key, iss: with_header(
        key, {"alg": "ES256", "kid": key.kid, "b64": False, "crit": ["b64"]}, iss
    ),
    "b64-false-not-critical": lambda key, iss: with_header(
        key, {"alg": "ES256", "kid": key.kid, "b64": False}, iss
    ),
    "alg-list": lambda key, iss: with_header(key, {"alg": ["ES256"], "kid": key.kid}, iss),
    "x5c-not-a-list": lambda key, iss: with_header(key, {"alg": "ES256", "x5c": "MII"}, iss),
    "x5c-not-base64": lambda key, iss: with_header(key, {"alg": "ES256", "x5c": ["%%"]}, iss),
    "garbage-base64": lambda key, iss: "%%%%.%%%%.%%%%",
    "bad-padding": lambda key, iss: "eyJ=.e30.c2ln",
    "header-not-json": lambda key, iss: unsigned(b"not json"),
    "header-not-utf8": lambda key, iss: unsigned(b'{"alg": "\xff\xfe"}'),
    "header-not-an-object": lambda key, iss: unsigned(b'["ES256"]'),
    "header-nested-deeply": lambda key, iss: unsigned(b"[" * 100_000 + b"]" * 100_000),
    "two-segments": lambda key, iss: f"{_b64url(b'{}')}.{_b64url(b'{}')}",
    "empty-segments": lambda key, iss: "..",
}


@pytest.mark.parametrize("make_token", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
async def test_tokens_with_malformed_headers_are_401_invalid_token(
    token_registry: Registry, make_token: Any
) -> None:
    """A header PyJWT refuses (RFC 7515: a `kid` is a string, a `crit` extension must be
    understood) is a token that does not hold, refused like any other: 401 invalid_token."""
    token = make_token(signing_key(token_registry), "portside")

    response = await refused_push(token_registry, token)

    assert_bearer_challenge(response, error="invalid_token")
    version = await token_registry.client.get("/v2/", headers=bearer(token))
    assert_bearer_challenge(version, error="invalid_token")


@pytest.mark.parametrize("trust", ["rootcertbundle", "jwks"])
@pytest.mark.parametrize("make_token", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
async def test_an_external_issuers_tokens_with_malformed_headers_are_401_invalid_token(
    make_registry: RegistryFactory, tmp_path: Path, trust: str, make_token: Any
) -> None:
    registry, key = await external_issuer_registry(make_registry, tmp_path, trust)
    token = make_token(key, "auth.example")

    response = await registry.client.post("/v2/team/app/blobs/uploads/", headers=bearer(token))

    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="https://auth.example/token",service="{SERVICE}",error="invalid_token"'
    )


@pytest.mark.parametrize("path", ["/v2/%C4%80/tags/list", "/v2/team/%C3%A9t%C3%A9/manifests/v1"])
async def test_a_name_outside_the_grammar_is_400_before_any_challenge(
    token_registry: Registry, path: str
) -> None:
    """Found by tests/fuzz: the challenge for a name with a character beyond Latin-1 could not
    be sent as a header (500). A name no repository can have is NAME_INVALID to anyone."""
    body = await get_token(token_registry, "repository:team/app:pull", user="alice")

    anonymous = await token_registry.client.get(path)
    with_token = await token_registry.client.get(path, headers=bearer(body["token"]))

    assert_error(anonymous, 400, "NAME_INVALID")
    assert_error(with_token, 400, "NAME_INVALID")


async def test_a_mount_from_a_name_outside_the_grammar_becomes_an_upload(
    token_registry: Registry,
) -> None:
    alice = await token_registry.as_user("alice")

    response = await alice.post(
        "/v2/alice/copy/blobs/uploads/?mount=" + digest_of(b"x") + "&from=%C4%80"
    )

    assert response.status_code == 202, response.text
