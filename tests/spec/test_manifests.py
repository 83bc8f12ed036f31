"""Pushing manifests (end-7): every manifest kind, their checks, limits and the subject header."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    INDEX_FOR,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    ClientFactory,
    assert_error,
    descriptor,
    digest_of,
    image_manifest,
    push_artifact,
    push_blob,
    push_image,
    push_index,
    put_manifest,
    random_bytes,
    to_json,
    unknown_digest,
)

from portside.config.settings import Settings
from portside.server.app import create_app

FLAVOURS = pytest.mark.parametrize(
    "media_type", [OCI_MANIFEST, DOCKER_MANIFEST], ids=["oci", "docker"]
)


async def pushable(client: httpx.AsyncClient, name: str, **fields: Any) -> dict[str, Any]:
    """A valid OCI image manifest document whose config and layer are in the repository."""
    config, layer = b'{"os":"linux"}', random_bytes()
    await push_blob(client, name, config)
    await push_blob(client, name, layer)
    return image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)], **fields)


# accepted


@FLAVOURS
async def test_put_by_tag_is_201_with_location_and_digest(
    client: httpx.AsyncClient, media_type: str
) -> None:
    """end-7: "the registry MUST return response code 201 Created, and MUST have ... Location",
    "a pullable manifest URL"; Docker-Content-Digest "MUST be equal to the client provided
    digest"."""
    pushed = await push_image(client, "app", "v1", media_type)
    response = await client.get(f"/v2/app/manifests/{pushed.digest}")
    assert response.status_code == 200
    document = await pushable(client, "app")
    body = to_json(document)
    response = await put_manifest(client, "app", "v2", body, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest_of(body)
    location = response.headers["location"]
    assert location == f"/v2/app/manifests/{digest_of(body)}"
    pulled = await client.get(location)
    assert pulled.content == body


async def test_put_by_digest_is_201_and_sets_no_tag(client: httpx.AsyncClient) -> None:
    body = to_json(await pushable(client, "app"))
    digest = digest_of(body)
    response = await put_manifest(client, "app", digest, body, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["location"] == f"/v2/app/manifests/{digest}"
    tags = await client.get("/v2/app/tags/list")
    assert tags.json()["tags"] == []


async def test_put_by_sha512_digest_is_201(client: httpx.AsyncClient) -> None:
    body = to_json(await pushable(client, "app"))
    digest = digest_of(body, "sha512")
    response = await put_manifest(client, "app", digest, body, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["docker-content-digest"] == digest
    pulled = await client.get(f"/v2/app/manifests/{digest}")
    assert pulled.content == body


async def test_manifest_is_stored_byte_for_byte(client: httpx.AsyncClient) -> None:
    """end-7: "The registry MUST store the manifest in the exact byte representation provided"."""
    document = await pushable(client, "app")
    body = b"\n\n  " + json.dumps(document, indent=7, sort_keys=True).encode() + b"  \n"
    response = await put_manifest(client, "app", "odd", body, OCI_MANIFEST)
    assert response.status_code == 201
    assert (await client.get("/v2/app/manifests/odd")).content == body


async def test_content_type_parameters_are_ignored(client: httpx.AsyncClient) -> None:
    """end-7: "The registry SHOULD ignore parameters on the Content-Type header"; GET answers
    without them ("The registry SHOULD NOT include parameters")."""
    body = to_json(await pushable(client, "app"))
    response = await put_manifest(client, "app", "v1", body, f"{OCI_MANIFEST}; charset=utf-8")
    assert response.status_code == 201
    assert (await client.get("/v2/app/manifests/v1")).headers["content-type"] == OCI_MANIFEST


async def test_manifest_without_media_type_takes_the_content_type(
    client: httpx.AsyncClient,
) -> None:
    document = await pushable(client, "app")
    del document["mediaType"]
    response = await put_manifest(client, "app", "v1", to_json(document), OCI_MANIFEST)
    assert response.status_code == 201
    assert (await client.get("/v2/app/manifests/v1")).headers["content-type"] == OCI_MANIFEST


async def test_manifest_with_media_type_needs_no_content_type(client: httpx.AsyncClient) -> None:
    body = to_json(await pushable(client, "app"))
    response = await put_manifest(client, "app", "v1", body, None)
    assert response.status_code == 201
    assert (await client.get("/v2/app/manifests/v1")).headers["content-type"] == OCI_MANIFEST


async def test_put_again_is_idempotent(client: httpx.AsyncClient) -> None:
    body = to_json(await pushable(client, "app"))
    for tag in ("v1", "v1", "v2"):
        response = await put_manifest(client, "app", tag, body, OCI_MANIFEST)
        assert response.status_code == 201
    assert (await client.get("/v2/app/tags/list")).json()["tags"] == ["v1", "v2"]


@pytest.mark.parametrize(
    "tag",
    ["a", "_", "A" * 128, "v1.2.3-rc_1", "sha256-" + "a" * 64, "latest"],
    ids=["one-char", "underscore", "128-chars", "punctuated", "referrers-tag-schema", "latest"],
)
async def test_every_valid_tag_is_accepted(client: httpx.AsyncClient, tag: str) -> None:
    """spec: a tag "MUST be at most 128 characters ... [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"."""
    body = to_json(await pushable(client, "app"))
    response = await put_manifest(client, "app", tag, body, OCI_MANIFEST)
    assert response.status_code == 201
    assert (await client.get(f"/v2/app/manifests/{tag}")).content == body


@FLAVOURS
async def test_index_over_manifests_in_the_repository_is_201(
    client: httpx.AsyncClient, media_type: str
) -> None:
    """OCI image index and Docker manifest list; their children are manifests pushed before."""
    children = [await push_image(client, "multi", None, media_type) for _ in range(2)]
    index = await push_index(client, "multi", children, "v1", INDEX_FOR[media_type])
    response = await client.get("/v2/multi/manifests/v1")
    assert response.content == index.body
    assert response.headers["content-type"] == INDEX_FOR[media_type]


async def test_index_of_indexes_is_201(client: httpx.AsyncClient) -> None:
    child = await push_image(client, "app", None)
    inner = await push_index(client, "app", [child], None)
    outer = await push_index(client, "app", [inner], "nested")
    assert (await client.get("/v2/app/manifests/nested")).content == outer.body


async def test_artifact_with_empty_config_is_201(client: httpx.AsyncClient) -> None:
    """An OCI 1.1 artifact: artifactType set, config the empty descriptor
    `application/vnd.oci.empty.v1+json` (the `{}` blob, sha256:44136fa...)."""
    assert digest_of(EMPTY_JSON) == EMPTY_JSON_DIGEST
    pushed = await push_artifact(client, "app", "application/vnd.example.sbom.v1", tag="sbom")
    response = await client.get("/v2/app/manifests/sbom")
    assert response.content == pushed.body
    assert response.headers["content-type"] == OCI_MANIFEST
    config = json.loads(response.content)["config"]
    assert (config["mediaType"], config["digest"]) == (OCI_EMPTY, EMPTY_JSON_DIGEST)


async def test_artifact_with_no_layers_is_201(client: httpx.AsyncClient) -> None:
    """spec: "The uploaded manifest MUST reference any blobs that make up the object. However, the
    list of blobs MAY be empty"."""
    await push_blob(client, "app", EMPTY_JSON)
    document = image_manifest(
        descriptor(OCI_EMPTY, EMPTY_JSON), [], artifactType="application/vnd.example.empty"
    )
    response = await put_manifest(client, "app", "empty", to_json(document), OCI_MANIFEST)
    assert response.status_code == 201


async def test_foreign_layers_with_urls_need_not_be_pushed(client: httpx.AsyncClient) -> None:
    """Non-distributable layers are fetched from their urls; distribution does not require them."""
    config = b"{}"
    await push_blob(client, "win", config)
    foreign = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": unknown_digest(),
        "size": 123,
        "urls": ["https://example.com/layer"],
    }
    document = image_manifest(
        descriptor("application/vnd.docker.container.image.v1+json", config),
        [foreign],
        DOCKER_MANIFEST,
    )
    response = await put_manifest(client, "win", "v1", to_json(document), DOCKER_MANIFEST)
    assert response.status_code == 201


# subject (spec "Pushing Manifests with Subject")


@pytest.mark.parametrize("subject_exists", [True, False], ids=["existing", "missing"])
async def test_manifest_with_subject_answers_oci_subject(
    client: httpx.AsyncClient, subject_exists: bool
) -> None:
    """end-7: a registry with the referrers API "MUST respond with the response header
    OCI-Subject: <subject digest>"; and "MUST initially accept an otherwise valid manifest with a
    subject field that references a manifest that does not exist"."""
    if subject_exists:
        subject = (await push_image(client, "app", "v1")).descriptor()
    else:
        subject = {"mediaType": OCI_MANIFEST, "digest": unknown_digest(), "size": 1234}
    document = await pushable(client, "app", subject=subject)
    response = await put_manifest(client, "app", "sig", to_json(document), OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers["oci-subject"] == subject["digest"]


async def test_index_with_subject_answers_oci_subject(client: httpx.AsyncClient) -> None:
    subject = await push_image(client, "app", "v1")
    child = await push_image(client, "app", None)
    index = await push_index(client, "app", [child], None, subject=subject.descriptor())
    response = await put_manifest(client, "app", index.digest, index.body, OCI_INDEX)
    assert response.headers["oci-subject"] == subject.digest


async def test_manifest_without_subject_has_no_oci_subject(client: httpx.AsyncClient) -> None:
    body = to_json(await pushable(client, "app"))
    response = await put_manifest(client, "app", "v1", body, OCI_MANIFEST)
    assert "oci-subject" not in response.headers


# refused: MANIFEST_INVALID (code-6)


async def test_put_by_digest_of_other_content_is_400_digest_invalid(
    client: httpx.AsyncClient,
) -> None:
    """code-4 DIGEST_INVALID: the body does not hash to the digest in the URL."""
    body = to_json(await pushable(client, "app"))
    response = await put_manifest(client, "app", unknown_digest(), body, OCI_MANIFEST)
    assert_error(response, 400, "DIGEST_INVALID")


async def test_put_by_malformed_digest_is_400_digest_invalid(client: httpx.AsyncClient) -> None:
    body = to_json(await pushable(client, "app"))
    response = await put_manifest(client, "app", "sha256:abc", body, OCI_MANIFEST)
    assert_error(response, 400, "DIGEST_INVALID")


def _mutations() -> list[Any]:
    def drop(field: str) -> Any:
        return lambda d: {k: v for k, v in d.items() if k != field}

    def put(field: str, value: Any) -> Any:
        return lambda d: {**d, field: value}

    def config(**changes: Any) -> Any:
        return lambda d: {**d, "config": {**d["config"], **changes}}

    cases = [
        ("schema-version-1", put("schemaVersion", 1)),
        ("schema-version-3", put("schemaVersion", 3)),
        ("schema-version-string", put("schemaVersion", "2")),
        ("schema-version-float", put("schemaVersion", 2.0)),
        ("schema-version-missing", drop("schemaVersion")),
        ("unknown-media-type", put("mediaType", "application/vnd.example.manifest")),
        ("media-type-not-string", put("mediaType", 7)),
        ("no-config", drop("config")),
        ("config-not-object", put("config", "sha256:abc")),
        ("no-layers", drop("layers")),
        ("layers-not-list", put("layers", {})),
        ("layer-not-object", put("layers", [1])),
        ("config-digest-malformed", config(digest="sha256:abc")),
        ("config-digest-missing", lambda d: {**d, "config": {"mediaType": OCI_CONFIG, "size": 2}}),
        ("config-size-negative", config(size=-1)),
        ("config-size-string", config(size="2")),
        ("config-size-bool", config(size=True)),
        ("config-media-type-empty", config(mediaType="")),
        ("subject-not-descriptor", put("subject", "sha256:" + "a" * 64)),
        (
            "subject-digest-malformed",
            put("subject", {"mediaType": OCI_MANIFEST, "digest": "x", "size": 1}),
        ),
        ("annotations-not-object", put("annotations", ["a"])),
        ("artifact-type-not-string", put("artifactType", 5)),
    ]
    return [pytest.param(change, id=case) for case, change in cases]


@pytest.mark.parametrize("change", _mutations())
async def test_malformed_manifest_is_400_manifest_invalid(
    client: httpx.AsyncClient, change: Any
) -> None:
    document = change(await pushable(client, "app"))
    response = await put_manifest(client, "app", "v1", to_json(document), OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")
    assert (await client.get("/v2/app/manifests/v1")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"a string"',
        b"null",
        b'{"schemaVersion": 2,',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=[
        "empty",
        "text",
        "array",
        "string",
        "null",
        "truncated",
        "binary",
        "deep-array",
        "deep-object",
    ],
)
async def test_body_that_is_not_a_json_object_is_400_manifest_invalid(
    client: httpx.AsyncClient, body: bytes
) -> None:
    response = await put_manifest(client, "app", "v1", body, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")


def _lone_surrogates() -> list[Any]:
    """Documents carrying a lone UTF-16 surrogate, which JSON's `\ud800` escape can spell and
    Python's parser decodes, but which is no Unicode text: UTF-8 (a database, a response) has no
    encoding for it."""

    def put(field: str, value: Any) -> Any:
        return lambda d: {**d, field: value}

    def config(**changes: Any) -> Any:
        return lambda d: {**d, "config": {**d["config"], **changes}}

    def layer(**changes: Any) -> Any:
        return lambda d: {**d, "layers": [{**d["layers"][0], **changes}]}

    cases = [
        ("artifact-type", put("artifactType", "\ud800")),
        ("artifact-type-in-text", put("artifactType", "application/vnd.x\udfff+json")),
        ("config-media-type", config(mediaType="\udfff")),
        ("layer-media-type", layer(mediaType="application/\ud800")),
        ("layer-annotation", layer(annotations={"a": "\udc00"})),
        ("layer-urls", layer(urls=["https://example.com/\ud800"])),
        ("annotation-value", put("annotations", {"org.example.note": "\ud800"})),
        ("annotation-key", put("annotations", {"org.example.\udbff": "x"})),
        ("description", put("annotations", {"org.opencontainers.image.description": "a\ud800"})),
        ("two-high-halves", put("annotations", {"a": "\ud83d\ud83d"})),
        ("low-before-high", put("annotations", {"a": "\ude00\ud83d"})),
        ("unknown-field", put("x-extra", {"deep": [{"deeper": ["\ud800"]}]})),
        ("unknown-key", put("x-\udfff", 1)),
        (
            "subject-media-type",
            put("subject", {"mediaType": "\ud800", "digest": "sha256:" + "a" * 64, "size": 1}),
        ),
    ]
    return [pytest.param(change, id=case) for case, change in cases]


@pytest.mark.parametrize("change", _lone_surrogates())
async def test_a_lone_surrogate_anywhere_is_400_manifest_invalid_and_nothing_is_stored(
    client: httpx.AsyncClient, change: Any
) -> None:
    """end-7: a manifest the registry cannot store or serve faithfully is MANIFEST_INVALID.
    A string that is not Unicode text could be stored nowhere, and a referrer carrying one
    would break every referrers list of its subject; the refusal stores nothing."""
    subject = await push_image(client, "app", "v1")
    document = change(await pushable(client, "app", subject=subject.descriptor()))
    body = to_json(document)
    assert b"\\ud" in body  # escaped as JSON spells it: the body itself is ASCII

    response = await put_manifest(client, "app", "v2", body, OCI_MANIFEST)

    assert_error(response, 400, "MANIFEST_INVALID")
    assert (await client.get("/v2/app/manifests/v2")).status_code == 404
    assert (await client.get(f"/v2/app/manifests/{digest_of(body)}")).status_code == 404
    referrers = await client.get(f"/v2/app/referrers/{subject.digest}")
    assert referrers.status_code == 200
    assert referrers.json()["manifests"] == []
    assert (await client.get("/v2/app/tags/list")).json()["tags"] == ["v1"]


async def test_a_surrogate_encoded_as_utf8_bytes_is_400_manifest_invalid(
    client: httpx.AsyncClient,
) -> None:
    """The same surrogate written as bytes (ED A0 80, which strict UTF-8 refuses and Python's
    JSON parser lets through) rather than as an escape."""
    document = await pushable(client, "app", annotations={"a": "SURROGATE"})
    body = to_json(document).replace(b"SURROGATE", b"\xed\xa0\x80")

    response = await put_manifest(client, "app", "v1", body, OCI_MANIFEST)

    assert_error(response, 400, "MANIFEST_INVALID")
    assert (await client.get("/v2/app/manifests/v1")).status_code == 404


async def test_surrogate_pairs_are_text_and_are_accepted(client: httpx.AsyncClient) -> None:
    """An escaped surrogate pair (`\ud83d\ude00`, as ASCII-only JSON writes any character
    beyond the BMP) is one character: accepted, and listed back as that character."""
    subject = await push_image(client, "app", "v1")
    document = await pushable(
        client,
        "app",
        artifactType="application/vnd.example.\U0001f600",
        subject=subject.descriptor(),
        annotations={"org.example.\U0001f600": "\U0001f600 and \u00e9"},
    )
    body = to_json(document)
    assert b"\\ud83d\\ude00" in body

    response = await put_manifest(client, "app", "v2", body, OCI_MANIFEST)

    assert response.status_code == 201, response.text
    referrers = (await client.get(f"/v2/app/referrers/{subject.digest}")).json()["manifests"]
    assert [(r["artifactType"], r["annotations"]) for r in referrers] == [
        (
            "application/vnd.example.\U0001f600",
            {"org.example.\U0001f600": "\U0001f600 and \u00e9"},
        )
    ]


@pytest.mark.filesystem_only("it writes into the registry's SQLite file")
async def test_a_referrer_stored_with_a_lone_surrogate_does_not_break_the_list(
    make_settings: Callable[..., Settings],
) -> None:
    """end-12a: a referrer whose annotations an older release stored with a lone surrogate (kept
    as the ASCII escape `\ud800`) is listed with U+FFFD in its place, not a 500 for every
    referrers list of its subject. The one white-box step: the database, as that release left
    it."""
    settings = make_settings()
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        subject = await push_image(client, "app", "v1")
        referrer = await push_artifact(
            client, "app", "application/vnd.example", subject, {"a": "b"}
        )
        database = Path(settings.storage_path) / "registry.db"
        with contextlib.closing(sqlite3.connect(database)) as conn, conn:
            conn.execute(
                "UPDATE manifests SET annotations = ? WHERE digest = ?",
                ('{"a":"x\\ud800","\\udfff":"\\ud83d\\ude00"}', referrer.digest),
            )

        response = await client.get(f"/v2/app/referrers/{subject.digest}")

        assert response.status_code == 200, response.text
        [listed] = response.json()["manifests"]
        assert listed["annotations"] == {"a": "x\ufffd", "\ufffd": "\U0001f600"}


def _unstorable_artifact_types() -> list[Any]:
    """Artifact types (given, or the config's mediaType standing in for one) that no database
    column can hold: a NUL (PostgreSQL text refuses it), more than ARTIFACT_TYPE_MAX (255)
    characters. Each with the field the refusal names."""
    long = "application/vnd.example." + "x" * 232  # 256 characters

    def put(field: str, value: Any) -> Any:
        return lambda d: {**d, field: value}

    def config(**changes: Any) -> Any:
        return lambda d: {**d, "config": {**d["config"], **changes}}

    cases = [
        ("artifact-type-nul", put("artifactType", "application/vnd.x\x00"), "artifactType"),
        ("artifact-type-nul-only", put("artifactType", "\x00"), "artifactType"),
        ("artifact-type-256", put("artifactType", long), "artifactType"),
        ("config-media-type-nul", config(mediaType="application/\x00json"), "config.mediaType"),
        ("config-media-type-256", config(mediaType=long), "config.mediaType"),
    ]
    return [pytest.param(change, field, id=case) for case, change, field in cases]


@pytest.mark.parametrize(("change", "field"), _unstorable_artifact_types())
async def test_an_artifact_type_no_database_could_keep_is_400_manifest_invalid(
    db_client: httpx.AsyncClient, change: Any, field: str
) -> None:
    """end-7: the artifact type is what referrers list and filter by (end-12a, end-12b), so the
    registry must keep it whole; one it cannot is MANIFEST_INVALID naming the field, on SQLite
    and PostgreSQL alike, and nothing is stored."""
    subject = await push_image(db_client, "app", "v1")
    document = change(await pushable(db_client, "app", subject=subject.descriptor()))

    response = await put_manifest(db_client, "app", "v2", to_json(document), OCI_MANIFEST)

    assert_error(response, 400, "MANIFEST_INVALID")
    assert response.json()["errors"][0]["detail"]["field"] == field
    assert (await db_client.get("/v2/app/manifests/v2")).status_code == 404
    referrers = await db_client.get(f"/v2/app/referrers/{subject.digest}")
    assert referrers.json()["manifests"] == []


async def test_an_index_artifact_type_with_nul_is_400_manifest_invalid(
    db_client: httpx.AsyncClient,
) -> None:
    child = await push_image(db_client, "app", "v1")
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.x\x00",
        "manifests": [child.descriptor()],
    }

    response = await put_manifest(db_client, "app", "all", to_json(document), OCI_INDEX)

    assert_error(response, 400, "MANIFEST_INVALID")
    assert response.json()["errors"][0]["detail"]["field"] == "artifactType"


@pytest.mark.parametrize("field", ["artifactType", "config.mediaType"])
async def test_an_artifact_type_of_255_characters_is_kept_whole(
    db_client: httpx.AsyncClient, field: str
) -> None:
    """The longest artifact type the registry keeps (as distribution's media types, 255),
    listed back whole by referrers."""
    artifact_type = "application/vnd.example." + "x" * 231
    assert len(artifact_type) == 255
    subject = await push_image(db_client, "app", "v1")
    document = await pushable(db_client, "app", subject=subject.descriptor())
    if field == "artifactType":
        document["artifactType"] = artifact_type
    else:
        document["config"]["mediaType"] = artifact_type

    response = await put_manifest(db_client, "app", "v2", to_json(document), OCI_MANIFEST)

    assert response.status_code == 201, response.text
    referrers = await db_client.get(
        f"/v2/app/referrers/{subject.digest}", params={"artifactType": artifact_type}
    )
    assert [r["artifactType"] for r in referrers.json()["manifests"]] == [artifact_type]


@pytest.mark.parametrize(
    ("declared", "content_type"),
    [(OCI_MANIFEST, OCI_INDEX), (OCI_MANIFEST, DOCKER_MANIFEST), (DOCKER_MANIFEST, OCI_MANIFEST)],
)
async def test_content_type_other_than_media_type_is_400_manifest_invalid(
    client: httpx.AsyncClient, declared: str, content_type: str
) -> None:
    """end-7: "If a manifest includes a mediaType field, clients MUST set the Content-Type header
    to the value specified by the mediaType field"."""
    document = await pushable(client, "app", mediaType=declared)
    response = await put_manifest(client, "app", "v1", to_json(document), content_type)
    assert_error(response, 400, "MANIFEST_INVALID")


async def test_manifest_with_neither_media_type_nor_content_type_is_400(
    client: httpx.AsyncClient,
) -> None:
    document = await pushable(client, "app")
    del document["mediaType"]
    response = await put_manifest(client, "app", "v1", to_json(document), None)
    assert_error(response, 400, "MANIFEST_INVALID")


async def test_index_without_manifests_list_is_400_manifest_invalid(
    client: httpx.AsyncClient,
) -> None:
    body = to_json({"schemaVersion": 2, "mediaType": OCI_INDEX})
    response = await put_manifest(client, "app", "v1", body, OCI_INDEX)
    assert_error(response, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "tag",
    ["-leading-dash", ".leading-dot", "a" * 129, "has+plus", "ümlaut"],
    ids=["dash", "dot", "129-chars", "plus", "non-ascii"],
)
async def test_put_by_invalid_tag_is_400_manifest_invalid(
    client: httpx.AsyncClient, tag: str
) -> None:
    """The spec has no TAG_INVALID; distribution answers MANIFEST_INVALID for a bad tag."""
    body = to_json(await pushable(client, "app"))
    response = await put_manifest(client, "app", tag, body, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")


# refused: MANIFEST_BLOB_UNKNOWN (code-5)


@pytest.mark.parametrize("missing", ["config", "layer"])
async def test_missing_blob_is_manifest_blob_unknown(
    client: httpx.AsyncClient, missing: str
) -> None:
    """spec: when a manifest is refused for descriptors "that reference a manifest or blob that
    does not exist in the registry, it MUST result in one or more MANIFEST_BLOB_UNKNOWN errors"."""
    config, layer = b'{"os":"linux"}', random_bytes()
    if missing != "config":
        await push_blob(client, "app", config)
    if missing != "layer":
        await push_blob(client, "app", layer)
    document = image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)])
    response = await put_manifest(client, "app", "v1", to_json(document), OCI_MANIFEST)
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
    assert (await client.get("/v2/app/manifests/v1")).status_code == 404


async def test_blob_of_another_repository_is_manifest_blob_unknown(
    client: httpx.AsyncClient,
) -> None:
    """A manifest may reference only blobs its own repository can read."""
    document = await pushable(client, "repo-a")
    response = await put_manifest(client, "repo-b", "v1", to_json(document), OCI_MANIFEST)
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST])
async def test_index_with_missing_child_is_manifest_blob_unknown(
    client: httpx.AsyncClient, media_type: str
) -> None:
    child = await push_image(client, "app", None)
    missing = {"mediaType": OCI_MANIFEST, "digest": unknown_digest(), "size": 100}
    body = to_json(
        {"schemaVersion": 2, "mediaType": media_type, "manifests": [child.descriptor(), missing]}
    )
    response = await put_manifest(client, "app", "v1", body, media_type)
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


async def test_index_over_a_plain_blob_is_manifest_blob_unknown(
    client: httpx.AsyncClient,
) -> None:
    """An index lists manifests: a blob that was only uploaded is not one."""
    data = random_bytes()
    await push_blob(client, "app", data)
    body = to_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(OCI_MANIFEST, data)]}
    )
    response = await put_manifest(client, "app", "v1", body, OCI_INDEX)
    assert_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


# size limit


async def test_manifest_over_max_manifest_size_is_413(make_client: ClientFactory) -> None:
    """end-7: "A registry that enforces this limit SHOULD respond to a request to push a manifest
    over this limit with a response code 413 Payload Too Large"."""
    client = await make_client(max_manifest_size=2048)
    document = await pushable(client, "app")
    body = to_json(document)
    padded = to_json({**document, "annotations": {"pad": "x" * (2048 - len(body))}})
    assert len(padded) > 2048
    response = await put_manifest(client, "app", "v1", padded, OCI_MANIFEST)
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "SIZE_INVALID"
    exact = to_json(
        {**document, "annotations": {"pad": "x" * (2048 - len(padded) + len(body) - 1)}}
    )
    assert len(exact) <= 2048
    response = await put_manifest(client, "app", "v1", exact, OCI_MANIFEST)
    assert response.status_code == 201


async def test_manifest_of_4_mib_is_accepted_by_default(client: httpx.AsyncClient) -> None:
    """end-7: "Client and registry implementations SHOULD expect to be able to support manifest
    pushes of at least 4 megabytes"."""
    document = await pushable(client, "app")
    size = len(to_json(document))
    big = to_json({**document, "annotations": {"pad": "x" * (4 * 1024 * 1024 - size - 40)}})
    assert 4_000_000 < len(big) <= 4 * 1024 * 1024
    response = await put_manifest(client, "app", "big", big, OCI_MANIFEST)
    assert response.status_code == 201
    response = await put_manifest(client, "app", "bigger", big + b" " * 100, OCI_MANIFEST)
    assert response.status_code == 413


async def test_streamed_manifest_over_the_limit_is_413(make_client: ClientFactory) -> None:
    """Without a Content-Length the limit holds too, counted as the body arrives."""
    client = await make_client(max_manifest_size=2048)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 1000

    response = await client.put(
        "/v2/app/manifests/v1", content=body(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status_code == 413


async def test_schema1_manifest_is_400_manifest_invalid(client: httpx.AsyncClient) -> None:
    """Docker schema 1 is long deprecated; distribution 3 refuses it too."""
    schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    body = to_json({"schemaVersion": 1, "name": "app", "tag": "v1", "fsLayers": []})
    response = await put_manifest(client, "app", "v1", body, schema1)
    assert_error(response, 400, "MANIFEST_INVALID")


async def test_concurrent_pushes_of_one_manifest_all_succeed(client: httpx.AsyncClient) -> None:
    body = to_json(await pushable(client, "app"))
    responses = await asyncio.gather(
        *(put_manifest(client, "app", tag, body, OCI_MANIFEST) for tag in ("a", "b", "a", "c"))
    )
    assert [r.status_code for r in responses] == [201] * 4
    assert {r.headers["docker-content-digest"] for r in responses} == {digest_of(body)}
    assert (await client.get("/v2/app/tags/list")).json()["tags"] == ["a", "b", "c"]
