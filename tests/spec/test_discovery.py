"""Content discovery: tags (end-8a, end-8b), the catalog (distribution's extension) and referrers
(end-12a, end-12b)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from helpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    assert_error,
    push_artifact,
    push_blob,
    push_image,
    push_index,
    put_manifest,
    random_bytes,
    unknown_digest,
)

LINK = re.compile(r'<(?P<url>[^>]+)>; rel="next"')


def next_link(response: httpx.Response) -> str | None:
    """The URL of an RFC 5988 `Link: <url>; rel="next"` header, checking its form."""
    value = response.headers.get("link")
    if value is None:
        return None
    match = LINK.fullmatch(value)
    assert match is not None, value
    return match["url"]


async def tag_all(client: httpx.AsyncClient, name: str, tags: list[str]) -> None:
    pushed = await push_image(client, name, tags[0])
    for tag in tags[1:]:
        response = await put_manifest(client, name, tag, pushed.body, OCI_MANIFEST)
        assert response.status_code == 201


TAGS = ["v1", "v10", "v2", "alpha", "beta", "latest", "1.0", "z_last"]


# tags (end-8a, end-8b)


async def test_tags_list_is_sorted_json(client: httpx.AsyncClient) -> None:
    """end-8a: "this request MUST return a 200 OK"; "the tags MUST be in lexical order"; the body
    is {"name": <name>, "tags": [...]}."""
    await tag_all(client, "library/app", TAGS)
    response = await client.get("/v2/library/app/tags/list")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"name": "library/app", "tags": sorted(TAGS)}
    assert "link" not in response.headers


async def test_tags_list_of_repository_without_tags_is_empty(client: httpx.AsyncClient) -> None:
    """end-8a: "The list of tags MAY be empty if there are no tags on the repository"."""
    await push_blob(client, "app", random_bytes())
    response = await client.get("/v2/app/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": "app", "tags": []}


async def test_tags_list_of_unknown_repository_is_404_name_unknown(
    client: httpx.AsyncClient,
) -> None:
    """end-8a fails with 404; code-9 NAME_UNKNOWN "repository name not known to registry"."""
    response = await client.get("/v2/nobody/home/tags/list")
    assert_error(response, 404, "NAME_UNKNOWN")


async def test_tags_are_per_repository(client: httpx.AsyncClient) -> None:
    await tag_all(client, "one", ["a", "b"])
    await tag_all(client, "one/two", ["c"])
    assert (await client.get("/v2/one/tags/list")).json()["tags"] == ["a", "b"]
    assert (await client.get("/v2/one/two/tags/list")).json()["tags"] == ["c"]


@pytest.mark.parametrize("n", [1, 3, 7])
async def test_n_limits_tags_with_a_link_to_the_rest(client: httpx.AsyncClient, n: int) -> None:
    """end-8b: "the response MUST include <int> results"; "If included, the Link header MUST be
    set according to RFC5988 with the Relation Type rel="next""; following it walks every tag."""
    await tag_all(client, "app", TAGS)
    response = await client.get("/v2/app/tags/list", params={"n": n})
    assert response.status_code == 200
    assert response.json()["tags"] == sorted(TAGS)[:n]
    seen = list(response.json()["tags"])
    url = next_link(response)
    while url is not None:
        assert url.startswith("/v2/app/tags/list?")
        assert parse_qs(urlsplit(url).query)["n"] == [str(n)]
        response = await client.get(url)
        assert response.status_code == 200
        page = response.json()["tags"]
        assert 0 < len(page) <= n
        seen += page
        url = next_link(response)
    assert seen == sorted(TAGS)


async def test_n_at_least_the_count_has_no_link(client: httpx.AsyncClient) -> None:
    await tag_all(client, "app", TAGS)
    for n in (len(TAGS), len(TAGS) + 1, 1000):
        response = await client.get("/v2/app/tags/list", params={"n": n})
        assert response.json()["tags"] == sorted(TAGS)
        assert "link" not in response.headers


async def test_n_zero_is_an_empty_list_without_link(client: httpx.AsyncClient) -> None:
    """end-8b: "When n is zero, this endpoint MUST return an empty list, and MUST NOT include a
    Link header"."""
    await tag_all(client, "app", TAGS)
    response = await client.get("/v2/app/tags/list", params={"n": 0})
    assert response.status_code == 200
    assert response.json() == {"name": "app", "tags": []}
    assert "link" not in response.headers


@pytest.mark.parametrize(
    ("n", "last", "expected"),
    [
        (2, "alpha", ["beta", "latest"]),
        (None, "latest", ["v1", "v10", "v2", "z_last"]),
        (3, "v2", ["z_last"]),
        (3, "z_last", []),
        (2, "b", ["beta", "latest"]),
    ],
    ids=["n-and-last", "last-only", "near-the-end", "after-the-end", "last-not-a-tag"],
)
async def test_last_starts_after_that_tag(
    client: httpx.AsyncClient, n: int | None, last: str, expected: list[str]
) -> None:
    """end-8b: "up to <int> tags *after* <tagname> will be returned"; "When using the last query
    parameter, the n parameter is OPTIONAL"."""
    await tag_all(client, "app", TAGS)
    params: dict[str, str | int] = {"last": last} if n is None else {"n": n, "last": last}
    response = await client.get("/v2/app/tags/list", params=params)
    assert response.status_code == 200
    assert response.json()["tags"] == expected


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "", "9999999999999999999999"])
async def test_bad_n_is_400(client: httpx.AsyncClient, n: str) -> None:
    """distribution: an `n` that is not a count is 400 PAGINATION_NUMBER_INVALID."""
    await tag_all(client, "app", ["v1"])
    response = await client.get("/v2/app/tags/list", params={"n": n})
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


# catalog (distribution's /v2/_catalog)


async def test_catalog_lists_repositories_with_manifests_sorted(
    client: httpx.AsyncClient,
) -> None:
    for name in ("zeta", "alpha/one", "alpha", "mid/dle/name"):
        await push_image(client, name, "v1")
    await push_blob(client, "blobs-only", random_bytes())
    response = await client.get("/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": ["alpha", "alpha/one", "mid/dle/name", "zeta"]}


async def test_catalog_of_empty_registry_is_empty(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/_catalog")
    assert response.status_code == 200
    assert response.json() == {"repositories": []}


async def test_catalog_pages_with_n_last_and_link(client: httpx.AsyncClient) -> None:
    names = [f"repo-{i}" for i in range(5)]
    for name in names:
        await push_image(client, name, "v1", layers=0)
    response = await client.get("/v2/_catalog", params={"n": 2})
    assert response.json()["repositories"] == names[:2]
    seen = list(names[:2])
    url = next_link(response)
    while url is not None:
        assert url.startswith("/v2/_catalog?")
        response = await client.get(url)
        seen += response.json()["repositories"]
        url = next_link(response)
    assert seen == names
    response = await client.get("/v2/_catalog", params={"last": "repo-2"})
    assert response.json()["repositories"] == names[3:]
    response = await client.get("/v2/_catalog", params={"n": 0})
    assert response.json()["repositories"] == []
    assert "link" not in response.headers


@pytest.mark.parametrize("n", ["-1", "x"])
async def test_catalog_bad_n_is_400(client: httpx.AsyncClient, n: str) -> None:
    response = await client.get("/v2/_catalog", params={"n": n})
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


# referrers (end-12a, end-12b)

SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


async def test_referrers_of_subject_without_referrers_is_an_empty_index(
    client: httpx.AsyncClient,
) -> None:
    """end-12a: "If a query results in no matching referrers, an empty manifest list MUST be
    returned"; "The Content-Type header MUST be set to application/vnd.oci.image.index.v1+json"."""
    subject = await push_image(client, "app", "v1")
    for digest in (subject.digest, unknown_digest()):
        response = await client.get(f"/v2/app/referrers/{digest}")
        assert response.status_code == 200
        assert response.headers["content-type"] == OCI_INDEX
        assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        assert "oci-filters-applied" not in response.headers


async def test_referrers_list_descriptors_with_artifact_type_and_annotations(
    client: httpx.AsyncClient,
) -> None:
    """end-12a: descriptors "MUST include an artifactType field that is set to the value of the
    artifactType in the image manifest or index", and "MUST include annotations" from it."""
    subject = await push_image(client, "app", "v1")
    sbom = await push_artifact(client, "app", SBOM, subject, {"org.example.format": "json"})
    signature = await push_artifact(client, "app", SIGNATURE, subject, {"org.example.key": "abcd"})
    await push_artifact(client, "app", SBOM, None)  # no subject: not a referrer
    response = await client.get(f"/v2/app/referrers/{subject.digest}")
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert by_digest == {
        sbom.digest: {
            "mediaType": OCI_MANIFEST,
            "digest": sbom.digest,
            "size": sbom.size,
            "artifactType": SBOM,
            "annotations": {"org.example.format": "json"},
        },
        signature.digest: {
            "mediaType": OCI_MANIFEST,
            "digest": signature.digest,
            "size": signature.size,
            "artifactType": SIGNATURE,
            "annotations": {"org.example.key": "abcd"},
        },
    }


async def test_referrer_without_artifact_type_takes_the_config_media_type(
    client: httpx.AsyncClient,
) -> None:
    """end-12a: "If the artifactType is empty or missing in the image manifest, the value of
    artifactType MUST be set to the config descriptor mediaType value"."""
    subject = await push_image(client, "app", "v1")
    referrer = await push_image(client, "app", None, subject=subject.descriptor())
    response = await client.get(f"/v2/app/referrers/{subject.digest}")
    (found,) = response.json()["manifests"]
    assert found["digest"] == referrer.digest
    assert found["artifactType"] == OCI_CONFIG
    assert "annotations" not in found


async def test_index_referrer_without_artifact_type_has_none(client: httpx.AsyncClient) -> None:
    """end-12a: "If the artifactType is empty or missing in an index, the artifactType MUST be
    omitted"; index referrers are listed with their annotations."""
    subject = await push_image(client, "app", "v1")
    child = await push_image(client, "app", None)
    index = await push_index(
        client,
        "app",
        [child],
        None,
        subject=subject.descriptor(),
        annotations={"org.example.created": "2024-01-01T00:00:00Z"},
    )
    response = await client.get(f"/v2/app/referrers/{subject.digest}")
    (found,) = response.json()["manifests"]
    assert found == {
        "mediaType": OCI_INDEX,
        "digest": index.digest,
        "size": index.size,
        "annotations": {"org.example.created": "2024-01-01T00:00:00Z"},
    }


async def test_index_referrer_with_artifact_type_lists_it(client: httpx.AsyncClient) -> None:
    subject = await push_image(client, "app", "v1")
    child = await push_image(client, "app", None)
    index = await push_index(
        client, "app", [child], None, subject=subject.descriptor(), artifactType=SBOM
    )
    response = await client.get(
        f"/v2/app/referrers/{subject.digest}", params={"artifactType": SBOM}
    )
    (found,) = response.json()["manifests"]
    assert (found["digest"], found["artifactType"]) == (index.digest, SBOM)


async def test_referrers_of_a_subject_pushed_later_are_listed(client: httpx.AsyncClient) -> None:
    """spec: clients may "push a manifest and referrers to that manifest in either order"."""
    future = {"mediaType": OCI_MANIFEST, "digest": unknown_digest(), "size": 10}
    referrer = await push_artifact(client, "app", SBOM, future)
    response = await client.get(f"/v2/app/referrers/{future['digest']}")
    assert [d["digest"] for d in response.json()["manifests"]] == [referrer.digest]


async def test_referrers_of_a_repository_not_pushed_yet_is_an_empty_index(
    client: httpx.AsyncClient,
) -> None:
    """end-12a, as the conformance suite checks it: a client may ask before the repository
    exists (an artifact pushed before its subject), and gets an empty index, not NAME_UNKNOWN."""
    response = await client.get(f"/v2/never/pushed/referrers/{unknown_digest()}")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCI_INDEX
    assert response.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


async def test_referrers_are_per_repository(client: httpx.AsyncClient) -> None:
    """end-12a: each descriptor is "of an image manifest or index in the same <name> namespace"."""
    subject = await push_image(client, "app", "v1")
    await push_artifact(client, "app", SBOM, subject)
    await push_image(client, "other", "v1")
    response = await client.get(f"/v2/other/referrers/{subject.digest}")
    assert response.status_code == 200
    assert response.json()["manifests"] == []


async def test_artifact_type_filter_applies_and_says_so(client: httpx.AsyncClient) -> None:
    """end-12b: "If filtering is requested and applied, the response MUST include a header
    OCI-Filters-Applied: artifactType"."""
    subject = await push_image(client, "app", "v1")
    sboms = [await push_artifact(client, "app", SBOM, subject) for _ in range(2)]
    await push_artifact(client, "app", SIGNATURE, subject)
    response = await client.get(
        f"/v2/app/referrers/{subject.digest}", params={"artifactType": SBOM}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == OCI_INDEX
    assert response.headers["oci-filters-applied"] == "artifactType"
    found = response.json()["manifests"]
    assert {d["digest"] for d in found} == {p.digest for p in sboms}
    assert {d["artifactType"] for d in found} == {SBOM}
    response = await client.get(
        f"/v2/app/referrers/{subject.digest}", params={"artifactType": "application/none"}
    )
    assert response.json()["manifests"] == []
    assert response.headers["oci-filters-applied"] == "artifactType"


async def test_deleted_referrer_is_no_longer_listed(client: httpx.AsyncClient) -> None:
    subject = await push_image(client, "app", "v1")
    referrer = await push_artifact(client, "app", SBOM, subject)
    response = await client.delete(f"/v2/app/manifests/{referrer.digest}")
    assert response.status_code == 202
    response = await client.get(f"/v2/app/referrers/{subject.digest}")
    assert response.json()["manifests"] == []


@pytest.mark.parametrize(
    "digest", ["sha256:abc", "latest", "sha256:" + "G" * 64, "md5:" + "0" * 32]
)
async def test_referrers_of_invalid_digest_is_400(client: httpx.AsyncClient, digest: str) -> None:
    """end-12a: "If the request is invalid, such as a <digest> with an invalid syntax, a 400 Bad
    Request MUST be returned"."""
    await push_image(client, "app", "v1")
    response = await client.get(f"/v2/app/referrers/{digest}")
    assert_error(response, 400, "DIGEST_INVALID")


# values no name holds, on SQLite and PostgreSQL alike


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("v1\x00", ["v10", "v2", "z_last"]),
        ("v1\x00zzz", ["v10", "v2", "z_last"]),
        ("\x00", sorted(TAGS)),
        ("v" * 300, ["z_last"]),
        ("v\u00e9", ["z_last"]),
        ("\ufffd", []),
    ],
    ids=["nul-at-end", "nul-inside", "nul-only", "longer-than-any-tag", "non-ascii", "u+fffd"],
)
async def test_tags_after_a_last_no_tag_could_be_are_those_after_it_in_code_point_order(
    db_client: httpx.AsyncClient, last: str, expected: list[str]
) -> None:
    """end-8b: the tags "lexically after <last>". No tag holds a NUL, so a `last` is read up to
    its first one: every tag after "v1\\0..." in code-point order is after "v1", as SQLite
    compares already (PostgreSQL refuses a NUL in text outright)."""
    await tag_all(db_client, "app", TAGS)

    response = await db_client.get("/v2/app/tags/list", params={"last": last})

    assert response.status_code == 200, response.text
    assert response.json()["tags"] == expected


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        ("b\x00", ["c"]),
        ("\x00x", ["a", "b", "c"]),
        ("b" * 300, ["c"]),
        ("b\u00e9", ["c"]),
    ],
    ids=["nul-at-end", "nul-first", "longer-than-any-name", "non-ascii"],
)
async def test_catalog_after_a_last_no_name_could_be_is_those_after_it_in_code_point_order(
    db_client: httpx.AsyncClient, last: str, expected: list[str]
) -> None:
    """distribution's catalog pages as tags do: a `last` read up to its first NUL."""
    for name in ("a", "b", "c"):
        await push_image(db_client, name, "v1", layers=0)

    response = await db_client.get("/v2/_catalog", params={"last": last})

    assert response.status_code == 200, response.text
    assert response.json()["repositories"] == expected


@pytest.mark.parametrize(
    "artifact_type",
    [SBOM + "\x00", "\x00", SBOM[:-1] + "\x00" + SBOM[-1], SBOM + "x" * 300],
    ids=["nul-at-end", "nul-only", "nul-inside", "longer-than-any"],
)
async def test_referrers_filtered_by_an_artifact_type_none_could_have_is_an_empty_index(
    db_client: httpx.AsyncClient, artifact_type: str
) -> None:
    """end-12b: only referrers whose artifactType matches; none can hold a NUL or be longer
    than the registry keeps (MANIFEST_INVALID at push), so none match."""
    subject = await push_image(db_client, "app", "v1")
    await push_artifact(db_client, "app", SBOM, subject)

    response = await db_client.get(
        f"/v2/app/referrers/{subject.digest}", params={"artifactType": artifact_type}
    )

    assert response.status_code == 200, response.text
    assert response.json()["manifests"] == []
    assert response.headers["oci-filters-applied"] == "artifactType"


async def test_referrers_keep_annotations_with_nul_as_pushed(db_client: httpx.AsyncClient) -> None:
    """end-12a: the descriptors carry the referrer's annotations; JSON may hold a NUL in them,
    which the registry keeps as JSON does, on PostgreSQL too."""
    subject = await push_image(db_client, "app", "v1")
    annotations = {"org.example.a\x00b": "x\x00y"}
    await push_artifact(db_client, "app", SBOM, subject, annotations)

    response = await db_client.get(f"/v2/app/referrers/{subject.digest}")

    assert response.status_code == 200, response.text
    assert [r["annotations"] for r in response.json()["manifests"]] == [annotations]
