"""Property (c): manifests of every kind (OCI image, OCI index, docker schema 2 image and list,
OCI 1.1 artifacts with subject, artifactType and annotations), valid and with fields mutated
anywhere in them: wrong types, huge and non-finite numbers, lone surrogates as JSON escapes
("\\ud800") and as raw bytes, NUL, very long strings, unicode, fields dropped, fields added, bad
digests, bad media types, Content-Type that disagrees with mediaType, not JSON at all.

A PUT answers 201 or one of the spec's 4xx for a manifest push (400 MANIFEST_INVALID, TAG_INVALID,
DIGEST_INVALID, NAME_INVALID, SIZE_INVALID; 404 MANIFEST_BLOB_UNKNOWN; 413), a refused one
changes nothing (property b), an accepted one reads back byte for byte by digest, and every read
afterwards (GET and HEAD by digest and by tag, the referrers of the manifest and of its subject,
with and without artifactType, tags, catalog, search) answers something other than a 5xx.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from fuzz_registry import Fuzzed, Request, digest_of
from fuzz_strategies import manifests_in
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

PUT_STATUSES = {201, 400, 404, 413}
PUT_CODES = {
    "MANIFEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "TAG_INVALID",
    "DIGEST_INVALID",
    "NAME_INVALID",
    "SIZE_INVALID",
    "BLOB_UNKNOWN",  # distribution's name for a missing blob of an index's child in some paths
}


def subject_digest(body: bytes) -> str | None:
    try:
        document: Any = json.loads(body)
        digest = document["subject"]["digest"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return digest if isinstance(digest, str) else None


def texts_in(body: bytes) -> list[str]:
    """A few strings of the manifest (annotation values, artifactType) to search for."""
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        return []
    found: list[str] = []
    if isinstance(document, dict):
        for value in (document.get("annotations") or {}, document.get("artifactType")):
            if isinstance(value, dict):
                found += [v for v in value.values() if isinstance(v, str)]
            elif isinstance(value, str):
                found.append(value)
    return found[:3]


@given(data=st.data())
def test_any_manifest_put_answers_201_or_a_spec_4xx_and_no_read_after_it_is_a_5xx(
    fuzzed: Fuzzed, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(fuzzed.seeded.names), label="repository")
    body, content_type, _ = data.draw(manifests_in(fuzzed.seeded, name), label="manifest")
    digest = digest_of(body)
    reference = data.draw(
        st.one_of(st.just(digest), st.sampled_from(["latest", "fuzz", "multi"])), label="reference"
    )
    headers = (("Content-Type", content_type),) if content_type is not None else ()
    put = Request("PUT", f"/v2/{name}/manifests/{reference}", headers, body, "admin")
    outcome = fuzzed.check(put)  # (a), and (b) on a 4xx
    assert outcome.status in PUT_STATUSES, f"{fuzzed}: {put!r}\n  -> {outcome.describe()}"
    if outcome.status != 201:
        code = json.loads(outcome.content)["errors"][0]["code"]
        assert code in PUT_CODES, f"{fuzzed}: {put!r}\n  -> {outcome.describe()}"
    else:
        assert outcome.headers["docker-content-digest"] == digest
        got = fuzzed.request("GET", f"/v2/{name}/manifests/{digest}", headers=[("Accept", "*/*")])
        assert got.status == 200, f"{fuzzed}: {put!r} then GET by digest -> {got.describe()}"
        assert got.content == body

    reads = [
        f"/v2/{name}/manifests/{digest}",
        f"/v2/{name}/manifests/{reference}",
        f"/v2/{name}/referrers/{digest}",
        f"/v2/{name}/tags/list",
        f"/v2/{name}/tags/list?n=2&last=fuzz",
        "/v2/_catalog",
        "/v2/_catalog?n=1",
        f"/v1/search?q={quote(name)}",
    ]
    subject = subject_digest(body)
    if subject is not None:
        reads.append(f"/v2/{name}/referrers/{quote(subject, errors='surrogatepass')}")
        reads.append(
            f"/v2/{name}/referrers/{quote(subject, errors='surrogatepass')}"
            "?artifactType=application%2Fvnd.example.signature"
        )
    for text in texts_in(body):
        reads.append(f"/v1/search?q={quote(text[:100], safe='', errors='surrogatepass')}")
    for method in ("GET", "HEAD"):
        for url in reads:
            read = Request(method, url, (("Accept", "*/*"),), b"", "admin")
            got = fuzzed.run(fuzzed.send(read))
            assert not got.failed, f"{fuzzed}: after {put!r}\n  {read!r}\n  -> {got.describe()}"
