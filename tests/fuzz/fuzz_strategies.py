"""Hypothesis strategies of the fuzz suite: names, references, digests, query strings, headers,
bodies, whole requests, and manifests with mutated fields.

A library, like tests/spec/helpers.py, so no test_ prefix. Strategies that aim at what a registry
holds take a `Seeded` (fuzz_registry.py), so that a good share of requests hit real repositories,
tags, digests and uploads rather than only 404s.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any, Final
from urllib.parse import quote

from fuzz_registry import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    PASSWORDS,
    SIGNATURE,
    Request,
    Seeded,
    basic,
    digest_of,
)
from hypothesis import strategies as st

MEDIA_TYPES: Final = (
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_EMPTY,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
    "application/octet-stream",
    "text/plain",
    "*/*",
    "",
)
QUERY_KEYS: Final = ("from", "mount", "digest", "n", "last", "artifactType", "q", "page")
LOGIN_USERS: Final = tuple(PASSWORDS)

# Text with everything in it: unicode of every category, lone surrogates (Cs) included, NUL and
# the other controls.
any_text = st.text(st.characters(exclude_categories=()), max_size=40)
lone_surrogate = st.integers(0xD800, 0xDFFF).map(chr)
SPECIALS: Final = (
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d",
    "\uffff",
    "\ufeff",
    "\u202e",
    "\u0130",
    "\U0001f600",
    "\x7f",
    "\n",
    "\t",
    "%",
    "/",
    "..",
    "\\",
    "'",
    '"',
    "*",
    "_",
    "?",
    "#",
)
nasty_text = st.one_of(
    st.sampled_from(["", " ", *SPECIALS, "a\x00b", "%00", "NULL", "-1", "\u0661", "\u00b2"]),
    st.builds(lambda a, s, b: a + s + b, any_text, st.sampled_from(SPECIALS), any_text),
    st.builds(lambda a, s, b: a + s + b, any_text, lone_surrogate, any_text),
    any_text,
    st.integers(1000, 20000).map(lambda n: "a" * n),
)

valid_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,4})?", fullmatch=True)
valid_name = st.lists(valid_component, min_size=1, max_size=3).map("/".join)


def name_variants(name: str) -> st.SearchStrategy[str]:
    """Ways to spell a repository name in a path that should not reach another repository:
    case, trailing and doubled slashes, dot segments, percent-encoding."""
    head, _, tail = name.partition("/")
    return st.sampled_from(
        [
            name,
            name.upper(),
            name.capitalize(),
            name + "/",
            name + "//",
            "/" + name,
            name.replace("/", "//"),
            name.replace("/", "%2F"),
            name.replace("/", "%2f"),
            "".join(f"%{ord(c):02X}" for c in name),
            quote(head[:1], safe="") + name[1:],
            f"%{ord(name[0]):02x}" + name[1:],
            f"alice/../{name}",
            f"alice/x/../../{name}",
            f"./{name}",
            f"{head}/./{tail}",
            f"alice/%2e%2e/{name}",
            f"alice/%2E%2E/{name}",
            f"{name}/.",
            f"{name}/..",
            f"{name}%00",
            f"{name}\x00",
            f"{head}\\{tail}",
            f" {name}",
            name.replace("o", "\u03bf"),  # Greek omicron
            name.replace("b", "\uff42"),  # fullwidth b
        ]
    )


def names(seeded: Seeded) -> st.SearchStrategy[str]:
    known = st.sampled_from(seeded.names)
    return st.one_of(
        known,
        known.flatmap(name_variants),
        valid_name,
        nasty_text.filter(lambda s: len(s) < 400),
        st.integers(250, 300).map(lambda n: "a/" * (n // 2)),
        st.sampled_from(["_catalog", "v2", "blobs", "manifests", "tags/list", "uploads", "a/b/c"]),
    )


def digests(seeded: Seeded) -> st.SearchStrategy[str]:
    known = st.sampled_from(sorted({*seeded.manifests, *seeded.blobs}))
    hexes = st.text("0123456789abcdef", min_size=0, max_size=140)
    return st.one_of(
        known,
        known,
        known.map(str.upper),
        known.map(lambda d: d[:-1]),
        known.map(lambda d: d + "0"),
        known.map(lambda d: d.replace("sha256", "sha512")),
        known.map(lambda d: d.replace(":", "%3A")),
        hexes.map(lambda h: f"sha256:{h}"),
        hexes.map(lambda h: f"sha512:{h}"),
        st.builds(
            lambda a, h: f"{a}:{h}", st.from_regex(r"[a-z0-9+._-]{0,12}", fullmatch=True), hexes
        ),
        st.binary(max_size=8).map(digest_of),
        st.binary(max_size=8).map(lambda b: digest_of(b, "sha512")),
        st.binary(max_size=8).map(lambda b: digest_of(b, "sha384")),
        nasty_text,
    )


def references(seeded: Seeded) -> st.SearchStrategy[str]:
    return st.one_of(
        digests(seeded),
        st.sampled_from(seeded.tags),
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True),
        st.integers(129, 200).map(lambda n: "t" * n),
        nasty_text,
    )


def upload_ids(seeded: Seeded) -> st.SearchStrategy[str]:
    known = st.sampled_from([location.rsplit("/", 1)[1] for location in seeded.uploads])
    return st.one_of(
        known,
        known.map(str.upper),
        known.map(lambda u: u + "/"),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(str),
        nasty_text,
    )


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-5, 200).map(str),
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(
            ["", "0", "00", "+1", " 1", "1.5", "1e9", "0x10", "\u0661", "\u00b2", "NaN", "9" * 30]
        ),
    )


def query_value(seeded: Seeded, key: str) -> st.SearchStrategy[str]:
    if key in ("n", "page"):
        return numbers()
    if key in ("digest", "mount"):
        return digests(seeded)
    if key in ("from", "last"):
        return st.one_of(nasty_text, names(seeded), references(seeded))
    if key == "artifactType":
        return st.one_of(st.sampled_from([SIGNATURE, *MEDIA_TYPES]), nasty_text)
    return st.one_of(names(seeded), nasty_text)


def query_strings(seeded: Seeded, keys: tuple[str, ...] = QUERY_KEYS) -> st.SearchStrategy[str]:
    """`?k=v&...` with the parameters the API reads (mostly `keys`, those of the endpoint),
    repeated at will, percent-encoded, plus raw junk (bad escapes, NUL, empty keys, a key
    without `=`)."""
    mostly = keys or QUERY_KEYS
    key = st.one_of(
        st.sampled_from(mostly),
        st.sampled_from(mostly),
        st.sampled_from(mostly),
        st.sampled_from(QUERY_KEYS),
        nasty_text,
    )
    pair = key.flatmap(
        lambda k: query_value(seeded, k).map(
            lambda v: (
                quote(k, safe="", errors="surrogatepass")
                + "="
                + quote(v, safe="", errors="surrogatepass")
            )
        )
    )
    raw = st.sampled_from(
        ["%", "%zz", "%00", "%ff%fe", "%ed%a0%80", "=", "&", "digest", "n=1=2", "q=%C0%AE", "a=+"]
    )
    return st.one_of(
        st.just(""),
        st.lists(st.one_of(pair, pair, pair, raw), min_size=1, max_size=6).map(
            lambda parts: "?" + "&".join(parts)
        ),
        st.lists(st.one_of(pair, pair, pair, raw), min_size=1, max_size=6).map(
            lambda parts: "?" + "&".join(parts)
        ),
    )


def quoted(path: str) -> str:
    return quote(path, safe="/%:@+,;=$&!*'()~", errors="surrogatepass")


Endpoint = tuple[tuple[str, ...], st.SearchStrategy[str], tuple[str, ...]]
FAMILIES: Final = (
    "base",
    "search",
    "catalog",
    "tags",
    "referrers",
    "manifests",
    "blobs",
    "upload-start",
    "upload-session",
)


def endpoints(seeded: Seeded) -> list[Endpoint]:
    """(methods, paths, query parameters read) of every route, with fuzzed path parameters,
    and near misses of the routes."""
    n = names(seeded)
    return [
        (("GET",), st.sampled_from(["/", "/v1/_ping", "/v2/", "/v2", "/v2//", "/v1/", "/x"]), ()),
        (("GET", "HEAD"), st.just("/v1/search"), ("q", "n", "page")),
        (("GET",), st.just("/v2/_catalog"), ("n", "last")),
        (("GET",), st.builds(lambda a: f"/v2/{a}/tags/list", n), ("n", "last")),
        (
            ("GET",),
            st.builds(lambda a, d: f"/v2/{a}/referrers/{d}", n, digests(seeded)),
            ("artifactType",),
        ),
        (
            ("GET", "HEAD", "PUT", "DELETE"),
            st.builds(lambda a, r: f"/v2/{a}/manifests/{r}", n, references(seeded)),
            (),
        ),
        (
            ("GET", "HEAD", "DELETE"),
            st.builds(lambda a, d: f"/v2/{a}/blobs/{d}", n, digests(seeded)),
            (),
        ),
        (
            ("POST",),
            st.one_of(
                st.builds(lambda a: f"/v2/{a}/blobs/uploads/", n),
                st.builds(lambda a: f"/v2/{a}/blobs/uploads", n),
            ),
            ("digest", "mount", "from"),
        ),
        (
            ("GET", "PATCH", "PUT", "DELETE"),
            st.one_of(
                st.builds(lambda a, u: f"/v2/{a}/blobs/uploads/{u}", n, upload_ids(seeded)),
                st.sampled_from(seeded.uploads),
            ),
            ("digest",),
        ),
    ]


def authorizations() -> st.SearchStrategy[str]:
    junk = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
    b64 = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())
    jwt_part = st.one_of(
        b64,
        st.dictionaries(
            st.sampled_from(["alg", "typ", "kid", "sub", "exp", "access"]),
            st.one_of(
                st.integers(-(2**64), 2**64),
                st.text(max_size=10),
                st.none(),
                st.lists(st.integers(), max_size=2),
            ),
            max_size=4,
        ).map(lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")),
        junk,
    )
    return st.one_of(
        st.sampled_from(LOGIN_USERS).map(basic),
        st.builds(basic, st.sampled_from(LOGIN_USERS), junk),
        b64.map(lambda s: f"Basic {s}"),
        st.builds(
            lambda u, p: "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode(), junk, junk
        ),
        junk.map(lambda s: f"Basic {s}"),
        st.sampled_from(["Basic", "Basic ", "Bearer", "Bearer ", "basic YWxpY2U6", "Digest x", ""]),
        junk.map(lambda s: f"Bearer {s}"),
        st.lists(jwt_part, min_size=1, max_size=4).map(lambda p: "Bearer " + ".".join(p)),
        junk,
    )


def header_values(name: str, seeded: Seeded) -> st.SearchStrategy[str]:
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)
    big = st.integers(-(2**70), 2**70)
    if name == "Content-Range":
        return st.one_of(
            st.builds(lambda a, b: f"{a}-{b}", st.integers(-3, 40), st.integers(-3, 40)),
            st.builds(lambda a, b: f"{a}-{b}", big, big),
            st.builds(lambda a, b: f"bytes {a}-{b}/*", st.integers(0, 40), st.integers(0, 40)),
            st.builds(
                lambda a, b, c: f"bytes={a}-{b}/{c}", st.integers(0, 40), st.integers(0, 40), big
            ),
            st.sampled_from(
                [
                    "",
                    "-",
                    "0-",
                    "-5",
                    "bytes */*",
                    "0-9999999999999999999",
                    "0-99999999999999999999",
                ]
            ),
            printable,
        )
    if name == "Content-Length":
        return st.one_of(numbers(), printable)
    if name == "Range":
        return st.one_of(
            st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(-3, 5000), st.integers(-3, 5000)),
            st.builds(lambda a, b: f"bytes={a}-{b}", big, big),
            st.builds(lambda a: f"bytes=-{a}", big),
            st.builds(lambda a: f"bytes={a}-", big),
            st.sampled_from(
                ["bytes=0-1,3-4", "bytes=", "bytes=-", "items=0-1", "bytes=1-0", "bytes= 0-1"]
            ),
            printable,
        )
    if name in ("Accept", "Content-Type"):
        types = st.sampled_from(MEDIA_TYPES)
        return st.one_of(
            types,
            st.lists(types, max_size=5).map(", ".join),
            types.map(lambda t: f"{t}; q=0.5; charset=utf-8"),
            printable,
        )
    if name == "Authorization":
        return authorizations()
    if name == "If-None-Match":
        return st.one_of(
            st.sampled_from(sorted(seeded.manifests)).map(lambda d: f'"{d}"'), printable
        )
    return printable


HEADER_NAMES: Final = (
    "Content-Range",
    "Content-Length",
    "Range",
    "Accept",
    "Content-Type",
    "Authorization",
    "If-None-Match",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "Docker-Content-Digest",
    "OCI-Chunk-Min-Length",
)


def headers(seeded: Seeded) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Headers the API reads, repeated at will (two Authorization, two Content-Length ...)."""
    one = st.sampled_from(HEADER_NAMES).flatmap(
        lambda name: header_values(name, seeded).map(lambda value: (name, value))
    )
    return st.lists(one, max_size=5).map(tuple)


def bodies(seeded: Seeded) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        st.binary(max_size=64),
        st.sampled_from(sorted(seeded.blobs.values())),
        st.sampled_from(sorted(seeded.manifests.values())),
        st.integers(8000, 9000).map(lambda n: b"x" * n),  # around SMALL_LIMITS
        manifests(seeded).map(lambda m: m[0]),
    )


METHODS: Final = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "PROPFIND")


@st.composite
def requests(draw: st.DrawFn, seeded: Seeded, family: str | None = None) -> Request:
    """A request to one of the endpoints (of `family`, one of FAMILIES, when given): mostly one
    of its own methods and query parameters, sometimes any; fuzzed headers and body; most often
    someone's real credentials too, so that it gets past the gate when auth is on."""
    routes = endpoints(seeded)
    if family is not None:
        routes = [routes[FAMILIES.index(family)]]
    methods, paths, keys = draw(st.sampled_from(routes))
    method = draw(
        st.one_of(st.sampled_from(methods), st.sampled_from(methods), st.sampled_from(METHODS))
    )
    path = quoted(draw(paths))
    query = draw(query_strings(seeded, keys))
    login = draw(st.one_of(st.sampled_from(LOGIN_USERS), st.sampled_from(LOGIN_USERS), st.none()))
    return Request(method, path + query, draw(headers(seeded)), draw(bodies(seeded)), login)


# Manifests: a valid document of each kind over the seeded content, then mutations of its fields.

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**400]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([math.inf, -math.inf, math.nan]),
    nasty_text,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(nasty_text, inner, max_size=3)
    ),
    max_leaves=6,
)


def valid_documents(seeded: Seeded, name: str) -> st.SearchStrategy[dict[str, Any]]:
    """A well-formed manifest over content seeded in `name`: OCI image, OCI index, docker
    schema 2 image, docker manifest list, and an artifact with subject and annotations."""
    manifests = seeded.manifests
    image = next(
        d
        for d in seeded.manifests_in[name]
        if json.loads(manifests[d]).get("mediaType") == OCI_MANIFEST
    )
    image_size = len(manifests[image])
    blobs = sorted((d, seeded.blobs[d]) for d in seeded.blobs_in[name])
    blob = st.sampled_from(blobs).map(
        lambda item: {"mediaType": OCI_LAYER, "digest": item[0], "size": len(item[1])}
    )
    child = st.sampled_from(sorted((d, manifests[d]) for d in seeded.manifests_in[name])).map(
        lambda item: {
            "mediaType": json.loads(item[1]).get("mediaType", OCI_MANIFEST),
            "digest": item[0],
            "size": len(item[1]),
            "platform": {"architecture": "amd64", "os": "linux"},
        }
    )
    subject = {"mediaType": OCI_MANIFEST, "digest": image, "size": image_size}
    annotations = st.dictionaries(nasty_text, nasty_text, max_size=3)

    def image_doc(
        media_type: str, config: dict[str, Any], layers: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers}

    return st.one_of(
        st.builds(lambda c, ls: image_doc(OCI_MANIFEST, c, ls), blob, st.lists(blob, max_size=3)),
        st.builds(
            lambda c, ls: image_doc(DOCKER_MANIFEST, c, ls), blob, st.lists(blob, max_size=3)
        ),
        st.builds(
            lambda ms: {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ms},
            st.lists(child, max_size=3),
        ),
        st.builds(
            lambda ms: {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": ms},
            st.lists(child, max_size=3),
        ),
        st.builds(
            lambda ls, a, t: {
                **image_doc(
                    OCI_MANIFEST,
                    {"mediaType": OCI_EMPTY, "digest": digest_of(b"{}"), "size": 2},
                    ls,
                ),
                "artifactType": t,
                "subject": subject,
                "annotations": a,
            },
            st.lists(blob, max_size=2),
            annotations,
            st.sampled_from([SIGNATURE, "application/vnd.example.sbom"]),
        ),
        st.builds(
            lambda a, t: {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "artifactType": t,
                "manifests": [],
                "subject": subject,
                "annotations": a,
            },
            annotations,
            st.sampled_from([SIGNATURE, "application/vnd.example.sbom"]),
        ),
    )


FIELDS: Final = (
    "schemaVersion",
    "mediaType",
    "config",
    "layers",
    "manifests",
    "subject",
    "artifactType",
    "annotations",
    "digest",
    "size",
    "platform",
    "urls",
    "data",
)


def fuzzed_digest_value(seeded: Seeded) -> st.SearchStrategy[Any]:
    return st.one_of(digests(seeded), JSON_SCALARS)


def mutate(draw: st.DrawFn, value: Any, seeded: Seeded, depth: int = 0) -> Any:
    """value with some of its fields (anywhere in it) replaced, removed or added."""
    if isinstance(value, dict):
        result = dict(value)
        for key in list(result):
            action = draw(st.sampled_from(["keep", "keep", "keep", "recurse", "replace", "drop"]))
            if action == "recurse":
                result[key] = mutate(draw, result[key], seeded, depth + 1)
            elif action == "replace":
                if key == "digest":
                    result[key] = draw(fuzzed_digest_value(seeded))
                elif key == "mediaType":
                    result[key] = draw(st.one_of(st.sampled_from(MEDIA_TYPES), JSON_VALUES))
                else:
                    result[key] = draw(JSON_VALUES)
            elif action == "drop":
                del result[key]
        for extra in draw(st.lists(st.one_of(st.sampled_from(FIELDS), nasty_text), max_size=2)):
            result[extra] = draw(
                st.one_of(JSON_VALUES, st.sampled_from([[{}], {"digest": 1}, [None]]))
            )
        return result
    if isinstance(value, list):
        result_list = [
            mutate(draw, item, seeded, depth + 1) if draw(st.booleans()) else item for item in value
        ]
        if draw(st.booleans()):
            result_list.append(draw(JSON_VALUES))
        return result_list
    return draw(JSON_VALUES) if draw(st.booleans()) else value


def encode(draw: st.DrawFn, document: Any) -> bytes:
    """JSON text of the document, in one of several spellings: ASCII with \\u escapes (lone
    surrogates become "\\ud800"), raw UTF-8 (lone surrogates as invalid bytes), with NaN and
    Infinity, or byte-mutated."""
    how = draw(st.sampled_from(["ascii", "ascii", "utf8", "bytes", "trailing"]))
    text = json.dumps(document, ensure_ascii=how != "utf8", indent=draw(st.sampled_from([None, 2])))
    if how == "utf8":
        return text.encode("utf-8", errors="surrogatepass")
    body = text.encode()
    if how == "bytes" and body:
        index = draw(st.integers(0, len(body) - 1))
        replacement = draw(st.binary(min_size=0, max_size=4))
        return body[:index] + replacement + body[index + 1 :]
    if how == "trailing":
        return body + draw(
            st.sampled_from([b" ", b"\n", b"x", b"{}", b"\x00", b"\xff", b'"\\ud800"'])
        )
    return body


@st.composite
def manifests_in(draw: st.DrawFn, seeded: Seeded, name: str) -> tuple[bytes, str | None, str]:
    """(body, Content-Type, what was done) of a manifest: valid, or mutated."""
    document: Any = draw(valid_documents(seeded, name))
    mutated = draw(st.booleans())
    if mutated:
        document = mutate(draw, document, seeded)
    if draw(st.integers(0, 9)) == 0:
        document = draw(JSON_VALUES)  # not even an object
    body = encode(draw, document)
    declared = document.get("mediaType") if isinstance(document, dict) else None
    content_type = draw(
        st.one_of(
            st.just(declared if isinstance(declared, str) else None),
            st.just(declared if isinstance(declared, str) else None),
            st.sampled_from(MEDIA_TYPES),
            st.none(),
        )
    )
    return body, content_type, "mutated" if mutated else "valid"


def manifests(seeded: Seeded) -> st.SearchStrategy[tuple[bytes, str | None, str]]:
    return manifests_in(seeded, seeded.names[0])
