"""Errors: the spec's codes (code-1 to code-14) declared once, each with a status and a message,
and every failure served in the spec's envelope {"errors": [{"code", "message", "detail"?}]}."""

from __future__ import annotations

import httpx
import pytest
from helpers import (
    OCI_MANIFEST,
    assert_error,
    digest_of,
    error_codes,
    push_image,
    start_upload,
    unknown_digest,
)

from portside.registry import errors
from portside.registry.errors import ErrorCode, RegistryError
from portside.server.errors import STATUS, STATUS_OVERRIDES, error_response

# The spec's "Error Codes" table, in order.
SPEC_CODES = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
]


def all_error_classes() -> list[type[RegistryError]]:
    found: list[type[RegistryError]] = []
    pending = [RegistryError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


@pytest.mark.parametrize("code", SPEC_CODES, ids=[f"code-{i}" for i in range(1, 15)])
def test_every_spec_code_is_declared(code: str) -> None:
    assert ErrorCode(code) == code


# Codes beyond the table for failures of the registry itself (distribution's), with their status.
SERVER_CODES = {"UNKNOWN": 500, "UNAVAILABLE": 503}


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_a_status(code: ErrorCode) -> None:
    """A client's error is 4xx; distribution's UNKNOWN, the registry's own failure, is 500
    (a full disk overrides it with 507, InsufficientStorage), and its UNAVAILABLE, a service
    it depends on being down (a cache's upstream), 503."""
    if code in SERVER_CODES:
        assert STATUS[code] == SERVER_CODES[code]
    else:
        assert 400 <= STATUS[code] < 500
    # spec: "containing only uppercase alphabetic characters and underscores"
    assert code.value.replace("_", "").isalpha()
    assert code.value.isupper()


def test_every_error_class_has_a_code_and_a_message() -> None:
    classes = all_error_classes()
    assert len(classes) >= len(SPEC_CODES)
    codes = set()
    for cls in classes:
        assert cls.__module__ == errors.__name__, cls
        assert isinstance(cls.code, ErrorCode), cls
        assert isinstance(cls.message, str), cls
        assert cls.message, cls
        codes.add(cls.code)
    assert codes == set(ErrorCode)


def test_status_overrides_are_error_classes_of_another_status() -> None:
    for cls, status in STATUS_OVERRIDES.items():
        assert issubclass(cls, RegistryError)
        assert status != STATUS[cls.code]


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_serves_the_envelope(cls: type[RegistryError]) -> None:
    # A policy's refusal says which rule in its message; every other error has its code's.
    error = (
        cls("rule x", {"why": "because"})  # type: ignore[call-arg]
        if issubclass(cls, errors.PolicyDenied)
        else cls({"why": "because"})
    )
    response = error_response(error)
    assert response.status_code == STATUS_OVERRIDES.get(cls, STATUS[cls.code])
    assert response.media_type == "application/json"
    wire = httpx.Response(response.status_code, content=response.body, headers=response.headers)
    assert error_codes(wire) == [cls.code]
    assert wire.json()["errors"][0] == {
        "code": cls.code,
        "message": "rule x" if issubclass(cls, errors.PolicyDenied) else cls.message,
        "detail": {"why": "because"},
    }


def test_error_without_detail_omits_it() -> None:
    response = error_response(errors.BlobUnknown())
    wire = httpx.Response(response.status_code, content=response.body, headers=response.headers)
    assert wire.json() == {
        "errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]
    }


# Every failure the API can produce, end to end, in the envelope with its spec code.

DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", f"/v2/app/blobs/{DIGEST}", 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/app/blobs/uploads/" + "0" * 32, 404, "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "/v2/app/blobs/sha256:1", 400, "DIGEST_INVALID"),
        ("GET", "/v2/app/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/App/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/nobody/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/app/tags/list?n=x", 400, "PAGINATION_NUMBER_INVALID"),
        ("PUT", "/v2/app/manifests/v1", 400, "MANIFEST_INVALID"),
        ("GET", "/v2/nowhere", 404, "UNSUPPORTED"),
        ("POST", "/v2/app/manifests/v1", 405, "UNSUPPORTED"),
    ],
)
async def test_failures_are_served_in_the_envelope(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: str
) -> None:
    await push_image(client, "app", "latest")
    response = await client.request(method, path, content=b"not a manifest")
    assert_error(response, status, code)


async def test_manifest_blob_unknown_lists_the_missing_digests(client: httpx.AsyncClient) -> None:
    """code-5: "one or more MANIFEST_BLOB_UNKNOWN errors"; the detail says which."""
    missing = sorted([unknown_digest(), unknown_digest()])
    body = (
        b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"a/b","digest":"%s","size":1},"layers":[{"mediaType":"a/b","digest":"%s","size":1}]}'
        % (
            OCI_MANIFEST.encode(),
            missing[0].encode(),
            missing[1].encode(),
        )
    )
    response = await client.put(
        "/v2/app/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
    assert response.json()["errors"][0]["detail"] == {"digests": missing}


async def test_digest_invalid_says_what_was_expected(client: httpx.AsyncClient) -> None:
    location = await start_upload(client, "app")
    wrong = digest_of(b"other")
    response = await client.put(location, params={"digest": wrong}, content=b"data")
    assert_error(response, 400, "DIGEST_INVALID")
    assert response.json()["errors"][0]["detail"] == {
        "expected": wrong,
        "actual": digest_of(b"data"),
    }


async def test_error_details_do_not_echo_unbounded_input(client: httpx.AsyncClient) -> None:
    """A hostile reference comes back cut short, not as a megabyte of reflected input."""
    long = "sha256:" + "a" * 20_000
    response = await client.get(f"/v2/app/blobs/{long}")
    assert_error(response, 400, "DIGEST_INVALID")
    assert len(response.content) < 2_000
