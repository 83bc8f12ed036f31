"""Registry tokens: issue and verify, every way a token is refused, external issuers with a
certificate bundle or a JWKS, and the signing key file."""

from __future__ import annotations

import base64
import datetime
import json
import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from auth_helpers import FakeClock
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from portside.auth.base import Access, repository
from portside.auth.keys import (
    KeySet,
    SigningKey,
    libtrust_kid,
    load_or_create_signing_key,
    thumbprint_kid,
)
from portside.auth.tokens import (
    AlgorithmRejected,
    TokenBadSignature,
    TokenExpired,
    TokenIssuer,
    TokenMalformed,
    TokenNotYetValid,
    TokenUnknownKey,
    TokenVerifier,
    TokenWrongAudience,
    TokenWrongIssuer,
    bearer_challenge,
)

ISSUER = "portside-token-issuer"
SERVICE = "registry.example.com"
APP = repository("team/app", "pull", "push")


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    return SigningKey.generate(request.param)


@pytest.fixture(scope="module")
def es_key() -> SigningKey:
    return SigningKey.generate("ES256")


def make_pair(key: SigningKey, clock: FakeClock) -> tuple[TokenIssuer, TokenVerifier]:
    issuer = TokenIssuer(key, ISSUER, lifetime=300, clock=clock)
    verifier = TokenVerifier(
        KeySet.from_signing_key(key), issuer=ISSUER, audience=SERVICE, leeway=30, clock=clock
    )
    return issuer, verifier


def segments(token: str) -> list[str]:
    return token.split(".")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(private_key: Any, claims: dict[str, Any], algorithm: str, **headers: Any) -> str:
    return jwt.encode(claims, private_key, algorithm, headers=headers or None)


def claims(clock: FakeClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock())
    base = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "j",
        "access": [APP.to_claim()],
    }
    return base | overrides


# Our own tokens -------------------------------------------------------------------------------


def test_round_trip(key: SigningKey, clock: FakeClock) -> None:
    issuer, verifier = make_pair(key, clock)
    issued = issuer.issue("alice", SERVICE, [APP, Access("registry", "catalog", frozenset("*"))])
    header = jwt.get_unverified_header(issued.token)
    assert header == {"alg": key.algorithm, "typ": "JWT", "kid": key.kid}
    token = verifier.verify(issued.token)
    assert token.subject == "alice"
    assert token.issuer == ISSUER
    assert token.expires_at == int(clock()) + 300
    assert token.access == {APP, Access("registry", "catalog", frozenset({"*"}))}
    body = issued.response(refresh_token="r")
    assert body["token"] == body["access_token"] == issued.token
    assert body["expires_in"] == 300
    assert body["issued_at"] == "2023-11-14T22:13:20Z"
    assert body["refresh_token"] == "r"


def test_claims_follow_the_spec(es_key: SigningKey, clock: FakeClock) -> None:
    issuer, _ = make_pair(es_key, clock)
    token = issuer.issue("", SERVICE, [repository("public/a", "pull")]).token
    payload = json.loads(unb64(segments(token)[1]))
    assert set(payload) == {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"}
    assert payload["sub"] == ""  # anonymous
    assert payload["aud"] == SERVICE
    assert payload["access"] == [{"type": "repository", "name": "public/a", "actions": ["pull"]}]
    other = issuer.issue("", SERVICE, []).token
    assert json.loads(unb64(segments(other)[1]))["jti"] != payload["jti"]


def test_token_for_one_repository_does_not_grant_another(
    es_key: SigningKey, clock: FakeClock
) -> None:
    issuer, verifier = make_pair(es_key, clock)
    token = verifier.verify(issuer.issue("alice", SERVICE, [repository("a", "pull")]).token)
    assert token.allows(repository("a", "pull"))
    assert token.granted(repository("a", "pull", "push")) == {"pull"}
    assert not token.allows(repository("a", "push"))
    assert token.granted(repository("b", "pull")) == frozenset()
    assert token.granted(repository("a/b", "pull")) == frozenset()
    assert token.granted(Access("registry", "a", frozenset({"pull"}))) == frozenset()


def test_star_grants_every_action(es_key: SigningKey, clock: FakeClock) -> None:
    issuer, verifier = make_pair(es_key, clock)
    token = verifier.verify(issuer.issue("admin", SERVICE, [repository("a", "*")]).token)
    assert token.allows(repository("a", "pull", "push", "delete"))


def test_expiry_with_leeway(es_key: SigningKey, clock: FakeClock) -> None:
    issuer, verifier = make_pair(es_key, clock)
    token = issuer.issue("alice", SERVICE, [APP]).token
    clock.advance(300 + 29)
    verifier.verify(token)
    clock.advance(2)
    with pytest.raises(TokenExpired):
        verifier.verify(token)


def test_not_yet_valid(es_key: SigningKey, clock: FakeClock) -> None:
    issuer, verifier = make_pair(es_key, clock)
    future = FakeClock(clock() + 60)
    token = TokenIssuer(es_key, ISSUER, clock=future).issue("alice", SERVICE, [APP]).token
    with pytest.raises(TokenNotYetValid):
        verifier.verify(token)
    clock.advance(31)  # within the leeway
    verifier.verify(token)
    assert issuer.lifetime == 300


def test_tampered_payload(key: SigningKey, clock: FakeClock) -> None:
    issuer, verifier = make_pair(key, clock)
    header, payload, signature = segments(issuer.issue("alice", SERVICE, [APP]).token)
    forged = json.loads(unb64(payload))
    forged["access"].append(repository("secret", "*").to_claim())
    with pytest.raises(TokenBadSignature):
        verifier.verify(f"{header}.{b64(json.dumps(forged).encode())}.{signature}")


def test_tampered_signature(key: SigningKey, clock: FakeClock) -> None:
    issuer, verifier = make_pair(key, clock)
    header, payload, signature = segments(issuer.issue("alice", SERVICE, [APP]).token)
    raw = bytearray(unb64(signature))
    raw[len(raw) // 2] ^= 1
    with pytest.raises(TokenBadSignature):
        verifier.verify(f"{header}.{payload}.{b64(bytes(raw))}")
    with pytest.raises(TokenBadSignature):
        verifier.verify(f"{header}.{payload}.")


def test_wrong_audience(es_key: SigningKey, clock: FakeClock) -> None:
    issuer, verifier = make_pair(es_key, clock)
    with pytest.raises(TokenWrongAudience):
        verifier.verify(issuer.issue("alice", "other-registry", [APP]).token)


def test_audience_list_naming_us(es_key: SigningKey, clock: FakeClock) -> None:
    _, verifier = make_pair(es_key, clock)
    token = sign(es_key.private_key, claims(clock, aud=["x", SERVICE]), "ES256", kid=es_key.kid)
    assert verifier.verify(token).subject == "alice"


def test_wrong_issuer(es_key: SigningKey, clock: FakeClock) -> None:
    _, verifier = make_pair(es_key, clock)
    other = TokenIssuer(es_key, "someone-else", clock=clock)
    with pytest.raises(TokenWrongIssuer):
        verifier.verify(other.issue("alice", SERVICE, [APP]).token)


def test_unknown_key(es_key: SigningKey, clock: FakeClock) -> None:
    _, verifier = make_pair(es_key, clock)
    stranger = SigningKey.generate("ES256")
    with pytest.raises(TokenUnknownKey):
        verifier.verify(TokenIssuer(stranger, ISSUER, clock=clock).issue("a", SERVICE, []).token)
    # a stranger's token that claims our kid is a bad signature
    token = sign(stranger.private_key, claims(clock), "ES256", kid=es_key.kid)
    with pytest.raises(TokenBadSignature):
        verifier.verify(token)
    with pytest.raises(TokenUnknownKey):
        verifier.verify(sign(es_key.private_key, claims(clock), "ES256"))  # no kid


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
def test_unsafe_algorithms_are_rejected(
    es_key: SigningKey, clock: FakeClock, algorithm: str
) -> None:
    _, verifier = make_pair(es_key, clock)
    secret = es_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": algorithm, "kid": es_key.kid, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims(clock)).encode())
    signature = (
        b64(jwt.api_jws.get_algorithm_by_name("HS256").sign(f"{header}.{payload}".encode(), secret))
        if algorithm == "HS256"
        else ""
    )
    with pytest.raises(AlgorithmRejected):
        verifier.verify(f"{header}.{payload}.{signature}")


def test_algorithm_the_key_cannot_sign_with(es_key: SigningKey, clock: FakeClock) -> None:
    _, verifier = make_pair(es_key, clock)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AlgorithmRejected):
        verifier.verify(sign(rsa_key, claims(clock), "RS256", kid=es_key.kid))


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a.b.c", "e30.e30.", "eyJhbGciOiJFUzI1NiJ9.!!!.x"]
)
def test_malformed(es_key: SigningKey, clock: FakeClock, token: str) -> None:
    _, verifier = make_pair(es_key, clock)
    with pytest.raises((TokenMalformed, AlgorithmRejected, TokenUnknownKey)):
        verifier.verify(token)


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": None},
        {"exp": "soon"},
        {"nbf": True},
        {"access": {"type": "repository"}},
        {"access": [{"type": "repository", "name": "a", "actions": "pull"}]},
        {"sub": 5},
        {"exp": float("inf")},
        {"exp": float("nan")},
        {"nbf": float("-inf")},
    ],
)
def test_malformed_claims(es_key: SigningKey, clock: FakeClock, overrides: dict[str, Any]) -> None:
    _, verifier = make_pair(es_key, clock)
    data = {k: v for k, v in (claims(clock) | overrides).items() if v is not None}
    with pytest.raises(TokenMalformed):
        verifier.verify(sign(es_key.private_key, data, "ES256", kid=es_key.kid))


def test_issuer_refuses_short_lifetimes(es_key: SigningKey) -> None:
    with pytest.raises(ValueError, match="60 seconds"):
        TokenIssuer(es_key, ISSUER, lifetime=30)


# External issuers ---------------------------------------------------------------------------


def certificate(
    key: Any, subject: str, issuer_key: Any = None, issuer: str | None = None, days: int = 30
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(issuer_key or key, hashes.SHA256())
    )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@pytest.fixture
def now_clock() -> FakeClock:
    """Certificates are made for the real present."""
    return FakeClock(datetime.datetime.now(datetime.UTC).timestamp())


def external_verifier(keys: KeySet, clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(keys, issuer="gitlab", audience=SERVICE, clock=clock)


def test_cert_bundle_by_libtrust_kid(tmp_path: Path, now_clock: FakeClock) -> None:
    theirs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = ec.generate_private_key(ec.SECP256R1())
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pem(certificate(other, "other")) + pem(certificate(theirs, "gitlab")))
    verifier = external_verifier(KeySet.from_pem_bundle(bundle), now_clock)
    data = claims(now_clock, iss="gitlab")
    kid = libtrust_kid(theirs.public_key())
    assert verifier.verify(sign(theirs, data, "RS256", kid=kid)).access == {APP}
    # a kid in an unknown format, or none: each key of the bundle is tried
    assert verifier.verify(sign(theirs, data, "RS256", kid="whatever")).subject == "alice"
    assert verifier.verify(sign(theirs, data, "RS256")).subject == "alice"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenUnknownKey):
        verifier.verify(sign(stranger, data, "RS256", kid="whatever"))
    with pytest.raises(TokenBadSignature):
        verifier.verify(sign(stranger, data, "RS256", kid=kid))


def test_cert_bundle_with_x5c_chain(now_clock: FakeClock) -> None:
    ca = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(ca, "ca")
    leaf = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = certificate(leaf, "signer", issuer_key=ca, issuer="ca")
    verifier = external_verifier(KeySet.from_pem_bundle(pem(ca_cert)), now_clock)
    data = claims(now_clock, iss="gitlab")
    token = sign(leaf, data, "ES256", x5c=[der_b64(leaf_cert)])
    assert verifier.verify(token).subject == "alice"
    rogue_ca = ec.generate_private_key(ec.SECP256R1())
    rogue_cert = certificate(leaf, "signer", issuer_key=rogue_ca, issuer="ca")
    with pytest.raises(TokenUnknownKey):
        verifier.verify(sign(leaf, data, "ES256", x5c=[der_b64(rogue_cert)]))
    expired_cert = certificate(leaf, "signer", issuer_key=ca, issuer="ca", days=-1)
    with pytest.raises(TokenUnknownKey):
        verifier.verify(sign(leaf, data, "ES256", x5c=[der_b64(expired_cert)]))
    with pytest.raises(TokenBadSignature):  # the chain is fine, the signer is not its leaf
        verifier.verify(sign(rogue_ca, data, "ES256", x5c=[der_b64(leaf_cert)]))


def test_jwks_from_data_and_file(tmp_path: Path, clock: FakeClock) -> None:
    theirs = SigningKey.generate("ES256")
    jwks = {"keys": [{**theirs.jwk(), "kid": "key-2024"}, {"kty": "oct", "k": "c2VjcmV0"}]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    data = claims(clock, iss="gitlab")
    for source in (jwks, path, str(path)):
        verifier = external_verifier(KeySet.from_jwks(source), clock)
        token = sign(theirs.private_key, data, "ES256", kid="key-2024")
        assert verifier.verify(token).access == {APP}
        with pytest.raises(TokenUnknownKey):
            verifier.verify(sign(theirs.private_key, data, "ES256", kid="other"))
    with pytest.raises(TokenUnknownKey):
        verifier.verify(sign(theirs.private_key, data, "ES256"))


def test_jwks_keys_without_kid_are_tried(clock: FakeClock) -> None:
    theirs = SigningKey.generate("RS256")
    jwk = {k: v for k, v in theirs.jwk().items() if k != "kid"}
    verifier = external_verifier(KeySet.from_jwks({"keys": [jwk]}), clock)
    data = claims(clock, iss="gitlab")
    assert verifier.verify(sign(theirs.private_key, data, "RS256")).subject == "alice"


def test_jwks_without_usable_keys() -> None:
    with pytest.raises(ValueError, match="no usable"):
        KeySet.from_jwks({"keys": [{"kty": "EC", "crv": "P-256", "x": "bad"}]})
    with pytest.raises(ValueError, match="keys"):
        KeySet.from_jwks({})


def test_our_jwks_and_certificate_verify_our_tokens(es_key: SigningKey, clock: FakeClock) -> None:
    issuer, _ = make_pair(es_key, clock)
    token = issuer.issue("alice", SERVICE, [APP]).token
    for trusted in (KeySet.from_jwks(es_key.jwks()), KeySet.from_pem_bundle(es_key.certificate())):
        verifier = TokenVerifier(trusted, issuer=ISSUER, audience=SERVICE, clock=clock)
        assert verifier.verify(token).subject == "alice"


# Key ids and the key file ---------------------------------------------------------------------


def test_thumbprint_matches_rfc_7638_example() -> None:
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    key = rsa.RSAPublicNumbers(65537, int.from_bytes(unb64(n), "big")).public_key()
    assert thumbprint_kid(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_libtrust_kid_shape(es_key: SigningKey) -> None:
    kid = libtrust_kid(es_key.public_key)
    groups = kid.split(":")
    assert len(groups) == 12
    assert all(len(g) == 4 and set(g) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for g in groups)
    assert SigningKey.from_pem(es_key.to_pem(), kid_format="libtrust").kid == kid


def test_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "token.pem"
    made = load_or_create_signing_key(path)
    assert made.algorithm == "ES256"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_signing_key(path, algorithm="RS256")
    assert again.kid == made.kid
    assert again.algorithm == "ES256"
    assert sorted(p.name for p in path.parent.iterdir()) == ["token.pem"]


def test_key_from_a_given_pem(tmp_path: Path) -> None:
    rsa_pem = SigningKey.generate("RS256").to_pem()
    path = tmp_path / "given.pem"
    path.write_bytes(rsa_pem)
    path.chmod(0o600)
    key = load_or_create_signing_key(path)
    assert key.algorithm == "RS256"
    assert path.read_bytes() == rsa_pem
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="2048"):
        SigningKey.from_private_key(small)
    with pytest.raises(ValueError, match="ES256 or RS256"):
        SigningKey.generate("HS256")  # type: ignore[arg-type]


# The challenge ------------------------------------------------------------------------------


def test_bearer_challenge() -> None:
    challenge = bearer_challenge(
        "https://r.example/auth/token",
        "r.example",
        [repository("a/b", "push", "pull"), Access("registry", "catalog", frozenset("*"))],
        error="insufficient_scope",
    )
    assert challenge == (
        'Bearer realm="https://r.example/auth/token",service="r.example",'
        'scope="repository:a/b:pull,push registry:catalog:*",error="insufficient_scope"'
    )
    assert bearer_challenge("r", 's"x') == 'Bearer realm="r",service="s\\"x"'


def test_new_ec_keys_have_full_length_coordinates(monkeypatch: pytest.MonkeyPatch) -> None:
    """distribution drops leading zero bytes of x and y in its thumbprint: avoid such keys."""

    def short(key: ec.EllipticCurvePrivateKey) -> bool:
        numbers = key.public_key().public_numbers()
        return min(numbers.x.bit_length(), numbers.y.bit_length()) <= 248

    bad = next(k for k in iter(lambda: ec.generate_private_key(ec.SECP256R1()), None) if short(k))
    good = ec.generate_private_key(ec.SECP256R1())
    while short(good):
        good = ec.generate_private_key(ec.SECP256R1())
    made = iter([bad, good])
    monkeypatch.setattr(ec, "generate_private_key", lambda curve: next(made))
    assert SigningKey.generate("ES256").private_key is good
