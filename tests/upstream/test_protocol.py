"""What the client checks and follows, against fake upstreams: redirects (credentials only to the
upstream's origin), digests, the manifest size limit, status mapping, referrers filtering and
tag pages."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import pytest

from portside.upstream import (
    MANIFEST_LIMIT,
    UpstreamDenied,
    UpstreamInvalid,
    UpstreamNotFound,
    UpstreamUnavailable,
)

from .conftest import UpstreamFactory
from .fake import FakeServer, Reply, Request, replying
from .registries import OCI_MANIFEST, digest_of
from .test_auth import basic

BLOB = b"layer bytes " * 1000
MANIFEST = b'{"schemaVersion":2}'
CREDENTIALS = {"username": "user", "password": "Secret-7"}
MIB = 1024 * 1024


def registry_redirecting_to(location: str) -> FakeServer:
    """Wants Basic auth; answers blob GETs with 307 to location, and serves /storage/ itself."""

    async def handle(request: Request) -> Reply:
        if request.headers.get("authorization") != basic("user", "Secret-7"):
            return Reply(401, {"WWW-Authenticate": 'Basic realm="fake"'})
        if request.path.startswith("/storage/"):
            return Reply(200, {}, BLOB)
        return Reply(307, {"Location": location})

    return FakeServer(handle)


async def test_a_redirect_to_another_host_gets_no_authorization(
    make_upstream: UpstreamFactory,
) -> None:
    async with FakeServer(replying(Reply(200, {}, BLOB))) as storage:
        async with registry_redirecting_to(f"{storage.url}/bucket/blob?signature=x") as registry:
            upstream = make_upstream(registry.url, **CREDENTIALS)
            async with upstream.open_blob("app", digest_of(BLOB)) as blob:
                assert blob.size == len(BLOB)
                assert b"".join([chunk async for chunk in blob]) == BLOB
        assert [request.target for request in storage.requests] == ["/bucket/blob?signature=x"]
        assert "authorization" not in storage.requests[0].headers
        assert registry.requests[-1].headers["authorization"] == basic("user", "Secret-7")


async def test_a_redirect_on_the_same_origin_keeps_the_authorization(
    make_upstream: UpstreamFactory,
) -> None:
    async with registry_redirecting_to("/storage/blob") as registry:
        upstream = make_upstream(registry.url, **CREDENTIALS)
        async with upstream.open_blob("app", digest_of(BLOB)) as blob:
            assert b"".join([chunk async for chunk in blob]) == BLOB


async def test_endless_redirects_are_invalid(make_upstream: UpstreamFactory) -> None:
    async with FakeServer(replying(Reply(302, {"Location": "/again"}))) as server:
        upstream = make_upstream(server.url)
        with pytest.raises(UpstreamInvalid, match="redirects"):
            async with upstream.open_blob("app", digest_of(BLOB)):
                pass
        assert len(server.requests) == 6


def manifest_reply(content: bytes = MANIFEST, **headers: str) -> Reply:
    return Reply(
        200,
        {"Content-Type": f"{OCI_MANIFEST}; charset=utf-8", **headers},
        content,
    )


async def test_the_manifest_digest_is_verified(make_upstream: UpstreamFactory) -> None:
    right, wrong = digest_of(MANIFEST), digest_of(b"something else")
    cases = {
        "matches": manifest_reply(**{"Docker-Content-Digest": right}),
        "absent": manifest_reply(),
        "wrong": manifest_reply(**{"Docker-Content-Digest": wrong}),
        "malformed": manifest_reply(**{"Docker-Content-Digest": "sha256:XYZ"}),
    }

    async def handle(request: Request) -> Reply:
        return cases[request.path.split("/")[2]]  # the repository names the case

    async with FakeServer(handle) as server:
        upstream = make_upstream(server.url)
        for case in ("matches", "absent"):
            fetched = await upstream.get_manifest(case, "latest")
            assert (fetched.digest, fetched.media_type) == (right, OCI_MANIFEST)
            assert (await upstream.get_manifest(case, right)).content == MANIFEST
        with pytest.raises(UpstreamInvalid, match="does not match"):
            await upstream.get_manifest("absent", wrong)
        with pytest.raises(UpstreamInvalid, match="does not match"):
            await upstream.get_manifest("wrong", "latest")
        with pytest.raises(UpstreamInvalid, match="asked for"):
            await upstream.head_manifest("wrong", right)
        with pytest.raises(UpstreamInvalid, match="not a digest"):
            await upstream.head_manifest("malformed", "latest")


async def test_a_manifest_over_the_limit_is_invalid(make_upstream: UpstreamFactory) -> None:
    big = b" " * (MANIFEST_LIMIT + 1)

    async def unannounced() -> AsyncIterator[bytes]:
        for start in range(0, len(big), MIB):
            yield big[start : start + MIB]

    async def handle(request: Request) -> Reply:
        if request.path.endswith("/announced"):
            return manifest_reply(big)
        return Reply(200, {"Content-Type": OCI_MANIFEST}, unannounced())  # read to the close

    async with FakeServer(handle) as server:
        upstream = make_upstream(server.url)
        for tag in ("announced", "unannounced"):
            with pytest.raises(UpstreamInvalid, match="over the limit"):
                await upstream.get_manifest("app", tag)
        with pytest.raises(UpstreamInvalid, match="over the limit"):
            await upstream.head_manifest("app", "announced")


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (Reply(404, {}, b"404 page not found"), UpstreamNotFound, "404"),
        (Reply(400, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'), UpstreamNotFound, "UNKNOWN"),
        (Reply(403, {}, b'{"errors":[{"code":"DENIED"}]}'), UpstreamDenied, "403 DENIED"),
        (Reply(429, {"Retry-After": "12"}, b""), UpstreamUnavailable, "429"),
        (Reply(502, {}, b"bad gateway"), UpstreamUnavailable, "502"),
        (Reply(400, {}, b'{"errors":[{"code":"NAME_INVALID"}]}'), UpstreamInvalid, "unexpected"),
        (Reply(200, {}, MANIFEST), UpstreamInvalid, "Content-Type"),
    ],
)
async def test_answers_map_to_errors(
    make_upstream: UpstreamFactory, reply: Reply, error: type[Exception], match: str
) -> None:
    async with FakeServer(replying(reply)) as server:
        upstream = make_upstream(server.url)
        with pytest.raises(error, match=match) as raised:
            await upstream.get_manifest("app", "latest")
    if reply.status == 429:
        assert isinstance(raised.value, UpstreamUnavailable)
        assert raised.value.retry_after == 12


REFERRERS = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"digest": digest_of(b"sbom"), "artifactType": "application/spdx+json"},
        {"digest": digest_of(b"sig"), "artifactType": "application/vnd.dev.cosign"},
    ],
}


@pytest.mark.parametrize("filtered_upstream", [True, False])
async def test_referrers_of_one_artifact_type(
    make_upstream: UpstreamFactory, filtered_upstream: bool
) -> None:
    async def handle(request: Request) -> Reply:
        index = dict(REFERRERS)
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        if filtered_upstream:
            index["manifests"] = REFERRERS["manifests"][:1]
            headers["OCI-Filters-Applied"] = "artifactType"
        return Reply(200, headers, json.dumps(index).encode())

    async with FakeServer(handle) as server:
        upstream = make_upstream(server.url)
        found = await upstream.referrers("app", digest_of(MANIFEST), "application/spdx+json")
        whole = await upstream.referrers("app", digest_of(MANIFEST), None)
        assert "artifactType=application%2Fspdx%2Bjson" in server.requests[0].target
    assert found is not None
    assert json.loads(found)["manifests"] == REFERRERS["manifests"][:1]
    assert whole is not None
    assert len(json.loads(whole)["manifests"]) == (1 if filtered_upstream else 2)


async def test_referrers_pages_are_joined_and_stay_on_the_same_host(
    make_upstream: UpstreamFactory,
) -> None:
    """spec: "a Link header MUST be included in the response when the descriptor list cannot be
    returned in a single manifest"; sync and the cache need every page, not the first."""
    first, second = REFERRERS["manifests"]

    async def handle(request: Request) -> Reply:
        headers = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
        index = {**REFERRERS, "manifests": [second]}
        if "page=2" not in request.target:
            index["manifests"] = [first]
            headers["Link"] = f'<{request.path}?page=2>; rel="next"'
            if request.path.startswith("/v2/elsewhere/"):
                headers["Link"] = '<http://evil.test/v2/x?page=2>; rel="next"'
        elif request.path.startswith("/v2/broken/"):
            return Reply(200, headers, b'{"manifests": 7}')  # a second page that is no index
        return Reply(200, headers, json.dumps(index).encode())

    async with FakeServer(handle) as server:
        upstream = make_upstream(server.url)
        joined = await upstream.referrers("app", digest_of(MANIFEST), None)
        sbom = await upstream.referrers("app", digest_of(MANIFEST), "application/spdx+json")
        with pytest.raises(UpstreamInvalid, match="another host"):
            await upstream.referrers("elsewhere", digest_of(MANIFEST), None)
        with pytest.raises(UpstreamInvalid, match="not an image index"):
            await upstream.referrers("broken", digest_of(MANIFEST), None)
    assert joined is not None
    assert json.loads(joined)["manifests"] == [first, second]
    assert sbom is not None
    assert json.loads(sbom)["manifests"] == [first]


async def test_tags_follow_the_link_header_on_the_same_host(
    make_upstream: UpstreamFactory,
) -> None:
    async def handle(request: Request) -> Reply:
        if "last=b" in request.target:
            return Reply(200, {}, b'{"name":"app","tags":["c"]}')
        if "last=elsewhere" in request.target:
            return Reply(200, {"Link": '<http://evil.test/v2/x>; rel="next"'}, b'{"tags":[]}')
        link = '</v2/app/tags/list?n=2&last=b>; rel="next"'
        return Reply(200, {"Link": link}, b'{"name":"app","tags":["a","b"]}')

    async with FakeServer(handle) as server:
        upstream = make_upstream(server.url)
        assert await upstream.tags("app") == ["a", "b", "c"]

        async def elsewhere(request: Request) -> Reply:
            link = '</v2/app/tags/list?last=elsewhere>; rel="next"'
            if "last=" in request.target:
                return await handle(request)
            return Reply(200, {"Link": link}, b'{"tags":["a"]}')

        server.handler = elsewhere
        with pytest.raises(UpstreamInvalid, match="another host"):
            await upstream.tags("app")


async def test_a_blob_sent_with_a_content_encoding_is_decoded(
    make_upstream: UpstreamFactory,
) -> None:
    # Registries send blobs as they are; one that compresses the transfer still gives the blob.
    reply = Reply(200, {"Content-Encoding": "gzip"}, gzip.compress(BLOB))
    async with FakeServer(replying(reply)) as registry:
        upstream = make_upstream(registry.url)
        async with upstream.open_blob("app", digest_of(BLOB)) as blob:
            assert b"".join([chunk async for chunk in blob]) == BLOB


async def test_a_blob_sent_as_it_is_arrives_as_it_is(make_upstream: UpstreamFactory) -> None:
    async with FakeServer(replying(Reply(200, {}, BLOB))) as registry:
        upstream = make_upstream(registry.url)
        async with upstream.open_blob("app", digest_of(BLOB)) as blob:
            assert blob.size == len(BLOB)
            assert b"".join([chunk async for chunk in blob]) == BLOB
