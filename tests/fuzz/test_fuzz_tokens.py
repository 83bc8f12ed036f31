"""Properties (a) and (b) for the token service and bearer tokens (auth mode `token`):

- bearer tokens that the registry's own key signs, with every claim mutated (iss, sub, aud, exp,
  nbf, iat, jti, access: wrong types, huge and non-finite numbers, lone surrogates, missing,
  extra) and a mutated JOSE header (kid, typ, crit, alg), and junk that is not a JWT at all;
- GET /auth/token with any query (service, scope, account, offline_token, client_id, repeated,
  poisoned) and credentials, and POST /auth/token with any form (grant_type, username,
  password, refresh_token, scope, service, access_type).

None gets a 5xx, and none refused changes the registry.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote, urlencode

import jwt
import pytest
from fuzz_registry import SERVICE, Fuzzed, Request
from fuzz_strategies import JSON_VALUES, authorizations, mutate, nasty_text
from hypothesis import given
from hypothesis import strategies as st

from portside.auth.keys import SigningKey

pytestmark = pytest.mark.fuzz

TARGETS = (
    ("GET", "/v2/"),
    ("GET", "/v2/alice/app/tags/list"),
    ("GET", "/v2/_catalog"),
    ("HEAD", "/v2/alice/app/manifests/latest"),
    ("POST", "/v2/alice/app/blobs/uploads/"),
    ("DELETE", "/v2/alice/app/manifests/latest"),
)


def issuer_of(fuzzed: Fuzzed) -> str:
    token = fuzzed.run(fuzzed.authorization("admin")).removeprefix("Bearer ")
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return str(claims["iss"])


@st.composite
def signed_tokens(draw: st.DrawFn, fuzzed: Fuzzed) -> str:
    key = SigningKey.from_pem(fuzzed.settings.token_key_path.read_bytes())
    now = int(time.time())
    claims: Any = {
        "iss": issuer_of(fuzzed),
        "sub": "alice",
        "aud": SERVICE,
        "exp": now + 600,
        "nbf": now - 10,
        "iat": now - 10,
        "jti": "fuzz",
        "access": [
            {"type": "repository", "name": "alice/app", "actions": ["pull", "push", "delete"]}
        ],
    }
    header: Any = {"typ": "JWT", "kid": key.kid, "alg": key.algorithm}
    seeded = fuzzed.seeded
    if draw(st.integers(0, 4)):
        claims = mutate(draw, claims, seeded)
    if draw(st.integers(0, 2)) == 0:
        header = mutate(draw, header, seeded)
    if draw(st.integers(0, 9)) == 0:
        claims = draw(JSON_VALUES)
    payload = json.dumps(claims).encode()
    header_json = json.dumps(header).encode()
    signing_input = (
        jwt.utils.base64url_encode(header_json) + b"." + jwt.utils.base64url_encode(payload)
    )
    algorithm = jwt.get_algorithm_by_name(key.algorithm)
    signature = algorithm.sign(signing_input, key.private_key)  # type: ignore[arg-type]
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


@given(data=st.data())
def test_no_bearer_token_gets_a_5xx(fuzzed_token: Fuzzed, data: st.DataObject) -> None:
    token = data.draw(
        st.one_of(
            signed_tokens(fuzzed_token).map(lambda t: f"Bearer {t}"),
            signed_tokens(fuzzed_token).map(lambda t: f"Bearer {t}"),
            authorizations(),
        ),
        label="Authorization",
    )
    method, url = data.draw(st.sampled_from(TARGETS), label="endpoint")
    fuzzed_token.check(Request(method, url, (("Authorization", token),)))


token_params = st.sampled_from(
    ["service", "scope", "account", "offline_token", "client_id", "grant_type"]
)
token_values = st.one_of(
    st.sampled_from(
        [
            SERVICE,
            "repository:alice/app:pull,push",
            "repository:bob/secret:pull",
            "registry:catalog:*",
            "repository:alice/app:*",
            "repository::pull",
            "repository:a:b:c:pull",
            "true",
            "alice",
            "bob",
        ]
    ),
    nasty_text,
)
form_fields = st.sampled_from(
    [
        "grant_type",
        "username",
        "password",
        "refresh_token",
        "scope",
        "service",
        "access_type",
        "client_id",
    ]
)
form_values = st.one_of(
    st.sampled_from(["password", "refresh_token", "alice", "alice-Secret-1", SERVICE, "offline"]),
    nasty_text,
)


@given(data=st.data())
def test_no_token_request_gets_a_5xx(fuzzed_token: Fuzzed, data: st.DataObject) -> None:
    credentials = data.draw(st.one_of(st.none(), authorizations()), label="Authorization")
    headers: tuple[tuple[str, str], ...] = (
        () if credentials is None else (("Authorization", credentials),)
    )
    if data.draw(st.booleans(), label="POST"):
        form = data.draw(st.lists(st.tuples(form_fields, form_values), max_size=6), label="form")
        body = urlencode(form, errors="surrogatepass").encode()
        content_type = data.draw(
            st.sampled_from(
                ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain", ""]
            )
        )
        request = Request("POST", "/auth/token", (*headers, ("Content-Type", content_type)), body)
    else:
        pairs = data.draw(st.lists(st.tuples(token_params, token_values), max_size=6))
        query = "&".join(
            f"{key}={quote(value, safe=':,*', errors='surrogatepass')}" for key, value in pairs
        )
        request = Request("GET", f"/auth/token?{query}", headers)
    fuzzed_token.check(request)
