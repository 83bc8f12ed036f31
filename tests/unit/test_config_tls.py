"""Tests of the TLS and public address settings: the files are checked as the server will load
them, so that `portside config check` catches what would otherwise stop every worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization

from portside.config.loader import ConfigError, load_settings
from portside.config.settings import Settings


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> dict[str, Path]:
    """A certificate for 127.0.0.1, its key, the CA, another key, and the key encrypted."""
    issued = ca.issue_cert("127.0.0.1", "registry.example.com")
    paths = {name: tmp_path / f"{name}.pem" for name in ("cert", "key", "ca", "other", "locked")}
    issued.cert_chain_pems[0].write_to_path(paths["cert"])
    issued.private_key_pem.write_to_path(paths["key"])
    ca.cert_pem.write_to_path(paths["ca"])
    ca.issue_cert("other.example").private_key_pem.write_to_path(paths["other"])
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    paths["locked"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"hunter2"),
        )
    )
    return paths


def load(tmp_path: Path, **values: object) -> Settings:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"dev": {k: str(v) for k, v in values.items()}}))
    return load_settings(path, environ={})


def problems(tmp_path: Path, **values: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **values)
    return str(caught.value)


def test_plain_http_by_default(tmp_path: Path) -> None:
    settings = load_settings(environ={})

    assert not settings.tls
    assert (settings.public_url, settings.trust_forwarded_headers) == (None, False)


def test_a_certificate_and_its_key_turn_tls_on(tmp_path: Path, files: dict[str, Path]) -> None:
    settings = load(
        tmp_path, tls_certificate=files["cert"], tls_key=files["key"], tls_client_ca=files["ca"]
    )

    assert settings.tls
    assert settings.tls_client_ca == files["ca"]


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"tls_certificate": "cert"}, "tls_certificate and tls_key go together"),
        ({"tls_key": "key"}, "tls_certificate and tls_key go together"),
        ({"tls_client_ca": "ca"}, "tls_client_ca needs tls_certificate and tls_key"),
        (
            {"tls_certificate": "cert", "tls_key": "other"},
            "do not load as a PEM certificate chain and its private key: KEY_VALUES_MISMATCH",
        ),
        ({"tls_certificate": "key", "tls_key": "key"}, "do not load as a PEM certificate chain"),
        ({"tls_certificate": "cert", "tls_key": "locked"}, "is encrypted; the server takes an"),
        (
            {"tls_certificate": "cert", "tls_key": "key", "tls_client_ca": "key"},
            "tls_client_ca '{key}' holds no PEM CA certificate",
        ),
    ],
)
def test_tls_files_that_would_not_load_are_config_errors(
    tmp_path: Path, files: dict[str, Path], values: dict[str, str], fragment: str
) -> None:
    message = problems(tmp_path, **{key: files[name] for key, name in values.items()})

    assert fragment.format(**files) in message


def test_an_unreadable_tls_file_is_named_with_its_key(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    missing = tmp_path / "missing.pem"

    message = problems(tmp_path, tls_certificate=missing, tls_key=tmp_path)

    assert f"key tls_certificate: cannot read '{missing}': No such file or directory" in message
    assert f"key tls_key: cannot read '{tmp_path}': Is a directory" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://registry.example.com", "https://registry.example.com"),
        ("https://registry.example.com/", "https://registry.example.com"),
        ("HTTPS://registry.example.com:8443", "https://registry.example.com:8443"),
        ("http://[::1]:5000", "http://[::1]:5000"),
    ],
)
def test_public_url_is_a_base_url(tmp_path: Path, value: str, expected: str) -> None:
    assert load(tmp_path, public_url=value).public_url == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("registry.example.com", "expected a URL such as https://registry.example.com"),
        ("ftp://registry.example.com", "expected a URL such as"),
        ("https://registry.example.com/v2", "expected only a scheme, a host and a port"),
        ("https://registry.example.com/?x=1", "expected only a scheme, a host and a port"),
        ("https://u:pw@registry.example.com", "expected only a scheme, a host and a port"),
        ("https://registry.example.com:70000", "bad port"),
    ],
)
def test_public_url_refuses_more_than_scheme_host_and_port(
    tmp_path: Path, value: str, fragment: str
) -> None:
    message = problems(tmp_path, public_url=value)

    assert "key public_url: " in message
    assert fragment in message
