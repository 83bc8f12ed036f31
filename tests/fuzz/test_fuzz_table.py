"""Properties (a) and (b), systematically: every query parameter the API reads, every path
parameter and every header it reads, on every endpoint that reads it, each given every value of
a table of poisons (NUL, lone surrogates, a BOM, non-ASCII digits, huge numbers, dot segments,
percent signs, very long strings ...), alone and repeated.

Random search finds combinations; this table makes sure the plain ones are never left to chance,
whatever the budget. Each test sends its whole table and reports every failure at once.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from fuzz_registry import Fuzzed, NotSent, Request

pytestmark = pytest.mark.fuzz

POISONS = (
    "\x00",
    "a\x00",
    "\ud800",  # a lone surrogate
    "\ufeff",  # outside Latin-1
    "\u0661",  # ARABIC-INDIC DIGIT ONE: isdigit(), and int() takes it
    "9" * 25,
    "-1",
    "",
    "..",
    "a" * 5000,
)
HEADER_POISONS = ("\x00", "\ufeff", "9" * 25, "-1", "a" * 5000)
# The table is long, so it runs where it finds most: the handlers (and their SQL) on PostgreSQL
# with auth off, which refuses NUL in text where SQLite takes it; the auth layer (challenges,
# scopes, tokens) with the token service on SQLite; and the headers, which reach no SQL, on
# SQLite both ways.
TABLE_CONFIGS = {
    "parameters": {("postgresql", "auth-off"), ("sqlite", "auth-token")},
    "headers": {("sqlite", "auth-off"), ("sqlite", "auth-token")},
}


def cases(fuzzed: Fuzzed) -> list[tuple[str, str]]:
    """(method, URL with {} where the poison goes) for every parameter of every endpoint."""
    seeded = fuzzed.seeded
    name = seeded.names[0]
    digest = sorted(seeded.manifests)[0]
    upload = seeded.uploads[0]
    listings = [
        ("GET", "/v2/_catalog?{q}"),
        ("GET", f"/v2/{name}/tags/list?{{q}}"),
        ("GET", f"/v2/{name}/referrers/{digest}?{{q}}"),
        ("GET", "/v1/search?{q}"),
        ("POST", f"/v2/{name}/blobs/uploads/?{{q}}"),
        ("PUT", f"{upload}?{{q}}"),
    ]
    keys = {
        "/v2/_catalog": ("n", "last"),
        "/tags/list": ("n", "last"),
        "/referrers/": ("artifactType", "n"),
        "/v1/search": ("q", "n", "page"),
        "/blobs/uploads/?": ("digest", "mount", "from"),
        "/blobs/uploads/": ("digest",),
    }
    found = [
        (method, url.replace("{q}", query))
        for method, url in listings
        for key in next(read for part, read in keys.items() if part in url)
        for query in (f"{key}={{}}", f"{key}=x&{key}={{}}")
    ]
    found += [
        ("POST", f"/v2/alice/app/blobs/uploads/?mount={digest}&from={{}}"),
        ("POST", f"/v2/alice/app/blobs/uploads/?mount={{}}&from={name}"),
        ("POST", f"/v2/alice/app/blobs/uploads/?from={name}&mount={digest}&from={{}}"),
    ]
    paths = [
        "/v2/{}/tags/list",
        "/v2/{}/manifests/latest",
        f"/v2/{name}/manifests/{{}}",
        "/v2/{}/blobs/" + digest,
        f"/v2/{name}/blobs/{{}}",
        f"/v2/{name}/referrers/{{}}",
        "/v2/{}/referrers/" + digest,
        "/v2/{}/blobs/uploads/",
        f"/v2/{name}/blobs/uploads/{{}}",
        "/v2/{}/blobs/uploads/" + upload.rsplit("/", 1)[1],
    ]
    for path in paths:
        for method in ("GET", "PUT", "PATCH", "DELETE") if "uploads/" in path else ("GET", "PUT"):
            found.append((method, path))
    return found


HEADERS = (
    "Content-Range",
    "Content-Length",
    "Range",
    "Accept",
    "Content-Type",
    "Authorization",
    "If-None-Match",
)


# Where a header's poison goes inside an otherwise well-formed value.
WRAPPED = {
    "Content-Range": "0-{}",
    "Content-Length": "{}",
    "Range": "bytes=0-{}",
    "Accept": "application/vnd.oci.image.manifest.v1+json, {}",
    "Content-Type": "application/vnd.oci.image.manifest.v1+json; {}",
    "Authorization": "Bearer {}",
    "If-None-Match": '"{}"',
}


def send_all(fuzzed: Fuzzed, table: str, requests: list[Request]) -> None:
    """Send them all, and fail with every kind of failure (its first request, and how many)."""
    if (fuzzed.backend, fuzzed.mode) not in TABLE_CONFIGS[table]:
        pytest.skip(f"the {table} table runs on {sorted(TABLE_CONFIGS[table])}")
    kinds: dict[str, list[str]] = {}
    for request in requests:
        try:
            fuzzed.check(request)
        except NotSent:
            continue
        except AssertionError as failure:
            text = str(failure).split("\nassert")[0]
            outcome = text.rpartition("->")[2]
            escaped = re.search(r"escaped: (\w+).* at (\S+)\)", outcome)
            kind = " ".join(escaped.groups()) if escaped else re.sub(r"\d+", "_", outcome)[:80]
            kinds.setdefault(kind, []).append(text)
    assert not kinds, f"{len(kinds)} kinds of failure:\n" + "\n".join(
        f"{len(found)} like: {found[0]}" for found in kinds.values()
    )


def test_every_parameter_of_every_endpoint_with_every_poison(fuzzed: Fuzzed) -> None:
    requests = [
        Request(
            method,
            url.replace("{}", quote(poison, safe="", errors="surrogatepass")),
            (),
            b"",
            login,
        )
        for method, url in cases(fuzzed)
        for poison in POISONS
        for login in ("admin",)
    ]
    send_all(fuzzed, "parameters", requests)


def test_every_header_on_every_endpoint_with_every_poison(fuzzed: Fuzzed) -> None:
    seeded = fuzzed.seeded
    name = seeded.names[0]
    digest = sorted(seeded.manifests)[0]
    blob = sorted(seeded.blobs_in[name])[0]
    targets = [
        ("GET", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/poisoned"),
        ("GET", f"/v2/{name}/blobs/{blob}"),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={digest}"),
        ("PATCH", seeded.uploads[0]),
        ("PUT", f"{seeded.uploads[0]}?digest={digest}"),
    ]
    requests = [
        Request(method, url, headers, b"0123", "admin" if header != "Authorization" else None)
        for method, url in targets
        for header in HEADERS
        for poison in HEADER_POISONS
        for headers in (
            ((header, poison),),
            ((header, WRAPPED[header].format(poison)), (header, WRAPPED[header].format("1"))),
        )
    ]
    send_all(fuzzed, "headers", requests)
