"""Keys that sign and verify registry tokens: our own signing key (made on first use and kept in a
PEM file), and the sets of public keys a verifier trusts (ours, a PEM bundle, or a JWKS).

Key ids (`kid`): a token names its key by one of two ids, and a KeySet knows both for each key:

    thumbprint   RFC 7638 JWK thumbprint, base64url SHA-256: what distribution 3 computes for
                 the certificates of its `rootcertbundle` (for EC keys only since its fix #4684;
                 3.0.0 hashed the curve's generator point instead, the same for every P-256 key)
    libtrust     base32 of SHA-256(DER SubjectPublicKeyInfo)[:30] in 12 groups of 4 joined by `:`,
                 what distribution 2.x, docker_auth and GitLab use
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from portside.auth._files import create_exclusive

log = logging.getLogger(__name__)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
SigningAlgorithm = Literal["ES256", "RS256"]
KidFormat = Literal["thumbprint", "libtrust"]

KEY_FILE_MODE: Final = 0o600
RSA_BITS: Final = 3072
# Asymmetric algorithms only: `none` and HMAC (where a public key could be misused as the
# secret) are never accepted.
VERIFY_ALGORITHMS: Final = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
_CURVES: Final = {
    "secp256r1": ("P-256", "ES256"),
    "secp384r1": ("P-384", "ES384"),
    "secp521r1": ("P-521", "ES512"),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The required members of a public key's JWK (RFC 7517), in thumbprint order."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = _CURVES.get(key.curve.name)
        if crv is None:
            raise ValueError(f"unsupported curve {key.curve.name}")
        size = (key.curve.key_size + 7) // 8
        numbers = key.public_numbers()
        x, y = _int_bytes(numbers.x, size), _int_bytes(numbers.y, size)
        return {"crv": crv[0], "kty": "EC", "x": _b64url(x), "y": _b64url(y)}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {
            "e": _b64url(_int_bytes(rsa_numbers.e)),
            "kty": "RSA",
            "n": _b64url(_int_bytes(rsa_numbers.n)),
        }
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def _full_length_point(key: ec.EllipticCurvePublicKey) -> bool:
    """Whether x and y need all their bytes. distribution's thumbprint encodes them without
    leading zero bytes, RFC 7518 with: for the 1 key in 128 that has one, the two differ."""
    numbers, bits = key.public_numbers(), key.curve.key_size
    return min(numbers.x.bit_length(), numbers.y.bit_length()) > bits - 8


def thumbprint_kid(key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    canonical = json.dumps(public_jwk(key), separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def libtrust_kid(key: PublicKey) -> str:
    """docker/libtrust's key id: `ABCD:EFGH:...` (12 groups of 4 base32 characters)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def key_ids(key: PublicKey) -> frozenset[str]:
    return frozenset({thumbprint_kid(key), libtrust_kid(key)})


def compatible(algorithm: str, key: PublicKey) -> bool:
    """Whether a token signed with `algorithm` could have been signed by `key`."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _CURVES.get(key.curve.name, ("", ""))[1] == algorithm
    if isinstance(key, rsa.RSAPublicKey):
        return algorithm[:2] in ("RS", "PS") and algorithm in VERIFY_ALGORITHMS
    return algorithm == "EdDSA"


# Our signing key -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A private key, its algorithm and the `kid` our tokens carry."""

    private_key: PrivateKey
    algorithm: SigningAlgorithm
    kid: str

    @classmethod
    def generate(
        cls, algorithm: SigningAlgorithm = "ES256", *, kid_format: KidFormat = "thumbprint"
    ) -> SigningKey:
        """A new key: P-256 for ES256, RSA 3072 for RS256."""
        key: PrivateKey
        if algorithm == "ES256":
            ec_key = ec.generate_private_key(ec.SECP256R1())
            while not _full_length_point(ec_key.public_key()):
                ec_key = ec.generate_private_key(ec.SECP256R1())
            key = ec_key
        elif algorithm == "RS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        else:
            raise ValueError(f"tokens are signed with ES256 or RS256, not {algorithm!r}")
        return cls.from_private_key(key, kid_format=kid_format)

    @classmethod
    def from_private_key(cls, key: object, *, kid_format: KidFormat = "thumbprint") -> SigningKey:
        if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
            algorithm: SigningAlgorithm = "ES256"
        elif isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
            algorithm = "RS256"
        else:
            raise ValueError("a signing key is an EC P-256 key or an RSA key of 2048 bits or more")
        public = key.public_key()
        kid = thumbprint_kid(public) if kid_format == "thumbprint" else libtrust_kid(public)
        return cls(key, algorithm, kid)

    @classmethod
    def from_pem(
        cls, data: bytes, *, password: bytes | None = None, kid_format: KidFormat = "thumbprint"
    ) -> SigningKey:
        """From a PEM private key (PKCS#8, SEC1 or PKCS#1); the algorithm follows the key type."""
        key = serialization.load_pem_private_key(data, password=password)
        return cls.from_private_key(key, kid_format=kid_format)

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def to_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK with `kid`, `alg` and `use`, for a JWKS document."""
        return public_jwk(self.public_key) | {"kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.jwk()]}

    def certificate(self, common_name: str = "portside token issuer", *, days: int = 3650) -> bytes:
        """A self-signed PEM certificate for this key: what distribution's `rootcertbundle`
        wants, for a CNCF registry that trusts our tokens."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.private_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


def load_or_create_signing_key(
    path: Path | str,
    *,
    algorithm: SigningAlgorithm = "ES256",
    kid_format: KidFormat = "thumbprint",
) -> SigningKey:
    """The key in the PEM file at `path`, made (mode 0600, atomically) when there is none.

    Workers starting together agree on one key: the file is created exclusively, and a worker
    that loses the race reads the winner's. `algorithm` only applies to a new key."""
    path = Path(path)
    if not path.exists():
        key = SigningKey.generate(algorithm, kid_format=kid_format)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if create_exclusive(path, key.to_pem(), KEY_FILE_MODE):
            log.info("made a new %s token signing key in %s (kid %s)", algorithm, path, key.kid)
            return key
    if path.stat().st_mode & 0o077:
        log.warning("token signing key %s can be read by other users: chmod 600 it", path)
    return SigningKey.from_pem(path.read_bytes(), kid_format=kid_format)


# Trusted keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedKey:
    public_key: PublicKey
    kids: frozenset[str]
    certificate: x509.Certificate | None = None


def _as_public_key(key: object) -> PublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise ValueError(f"unsupported public key type {type(key).__name__}")
    return key


class UntrustedChain(Exception):
    """An `x5c` certificate chain that does not lead to a certificate of the bundle."""


class KeySet:
    """The public keys a verifier trusts, found by `kid`.

    With `try_each`, a token whose `kid` matches no key (or has none) is tried against every key,
    as needed for certificate bundles of issuers whose key id format is unknown."""

    def __init__(self, keys: Iterable[TrustedKey], *, try_each: bool = False) -> None:
        self.keys = tuple(keys)
        self.try_each = try_each
        self._by_kid = {kid: key.public_key for key in self.keys for kid in key.kids}

    @classmethod
    def from_signing_key(cls, key: SigningKey) -> KeySet:
        """Our own key: tokens must name it by `kid`."""
        trusted = TrustedKey(key.public_key, key_ids(key.public_key) | {key.kid})
        return cls([trusted])

    @classmethod
    def from_pem_bundle(cls, source: bytes | Path | str) -> KeySet:
        """Certificates (and bare `PUBLIC KEY` blocks) from a PEM bundle, its contents or path."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        keys = []
        for block in _pem_blocks(data):
            if b"-----BEGIN CERTIFICATE-----" in block:
                cert = x509.load_pem_x509_certificate(block)
                key = _as_public_key(cert.public_key())
                keys.append(TrustedKey(key, key_ids(key), cert))
            elif b"-----BEGIN PUBLIC KEY-----" in block:
                key = _as_public_key(serialization.load_pem_public_key(block))
                keys.append(TrustedKey(key, key_ids(key)))
        if not keys:
            raise ValueError("no certificate or public key in the PEM bundle")
        return cls(keys, try_each=True)

    @classmethod
    def from_jwks(cls, source: Mapping[str, Any] | Path | str) -> KeySet:
        """The signature keys of a JWKS document, given as data or a file path. Keys without a
        `kid` are known by their ids and tried for tokens whose `kid` matches nothing."""
        data = source if isinstance(source, Mapping) else json.loads(Path(source).read_text())
        entries = data.get("keys")
        if not isinstance(entries, list):
            raise ValueError("a JWKS document has a `keys` list")
        keys, try_each = [], False
        for entry in entries:
            if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = _as_public_key(jwt.PyJWK(dict(entry)).key)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError) as error:
                log.warning("JWKS key %r skipped: %s", entry.get("kid"), error)
                continue
            kid = entry.get("kid")
            try_each |= not isinstance(kid, str)
            kids = {kid} if isinstance(kid, str) else set(key_ids(key))
            keys.append(TrustedKey(key, frozenset(kids)))
        if not keys:
            raise ValueError("no usable signature key in the JWKS document")
        return cls(keys, try_each=try_each)

    def find(self, kid: str | None) -> PublicKey | None:
        return self._by_kid.get(kid) if kid is not None else None

    def public_keys(self) -> list[PublicKey]:
        return [key.public_key for key in self.keys]

    def resolve_chain(self, x5c: Sequence[str], now: datetime.datetime) -> PublicKey:
        """The leaf key of an `x5c` chain (base64 DER, leaf first) that leads, each certificate
        issued by the next, to a certificate of this set; raises UntrustedChain otherwise."""
        try:
            chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in x5c]
        except (ValueError, TypeError) as error:
            raise UntrustedChain(f"unreadable x5c certificate: {error}") from error
        roots = [key.certificate for key in self.keys if key.certificate is not None]
        if not chain or not roots:
            raise UntrustedChain("no x5c chain, or no certificates to check it against")
        for cert in chain:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise UntrustedChain("an x5c certificate is outside its validity period")
        try:
            for child, parent in itertools.pairwise(chain):
                child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as error:
            raise UntrustedChain(f"x5c certificates do not chain: {error}") from error
        top = chain[-1]
        for root in roots:
            if top == root:
                return _as_public_key(chain[0].public_key())
            try:
                top.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return _as_public_key(chain[0].public_key())
        raise UntrustedChain("the x5c chain does not lead to a trusted certificate")


def _pem_blocks(data: bytes) -> list[bytes]:
    blocks, current = [], []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN "):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith(b"-----END "):
                blocks.append(b"".join(current))
                current = []
    return blocks
