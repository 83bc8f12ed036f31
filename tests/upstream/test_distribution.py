"""The Upstream client against an open CNCF distribution 2.8: manifests by tag and by digest,
blobs streamed whole, tags, 404s, and no referrers API."""

from __future__ import annotations

import secrets

import httpx
import pytest

from portside.upstream import Upstream, UpstreamNotFound

from .conftest import UpstreamFactory
from .registries import OCI_MANIFEST, Distribution, PushedImage, digest_of, push_image

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def image(distribution: Distribution) -> PushedImage:
    """An image of a 3 MiB layer and a small one, tagged v1 and v2."""
    with httpx.Client(base_url=distribution.url) as client:
        layers = (secrets.token_bytes(3 * MIB + 17), secrets.token_bytes(100))
        pushed = push_image(client, "mirror/app", "v1", layers)
        answer = client.put(
            "/v2/mirror/app/manifests/v2",
            content=pushed.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert answer.status_code == 201
        return pushed


@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_head_manifest_gives_digest_media_type_and_size(
    make_upstream: UpstreamFactory, distribution: Distribution, image: PushedImage, by: str
) -> None:
    upstream = make_upstream(distribution.url)
    reference = image.tag if by == "tag" else image.digest
    info = await upstream.head_manifest("mirror/app", reference)
    assert (info.digest, info.media_type, info.size) == (
        image.digest,
        OCI_MANIFEST,
        len(image.manifest),
    )


@pytest.mark.parametrize("by", ["tag", "digest"])
async def test_get_manifest_gives_the_pushed_bytes(
    make_upstream: UpstreamFactory, distribution: Distribution, image: PushedImage, by: str
) -> None:
    upstream = make_upstream(distribution.url)
    reference = image.tag if by == "tag" else image.digest
    manifest = await upstream.get_manifest("mirror/app", reference, [OCI_MANIFEST])
    assert manifest.content == image.manifest
    assert manifest.digest == image.digest
    assert manifest.media_type == OCI_MANIFEST


async def test_blob_streams_in_chunks_with_identical_bytes(
    make_upstream: UpstreamFactory, distribution: Distribution, image: PushedImage
) -> None:
    upstream = make_upstream(distribution.url)
    layer = image.layers[0]
    chunks = []
    async with upstream.open_blob("mirror/app", digest_of(layer)) as blob:
        assert blob.size == len(layer)
        async for chunk in blob:
            chunks.append(chunk)
    assert b"".join(chunks) == layer
    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= 1 * MIB


async def test_has_blob_asks_for_one_byte_of_it(
    make_upstream: UpstreamFactory, distribution: Distribution, image: PushedImage
) -> None:
    """How the cache checks that an upstream repository has a blob it already stores, without
    downloading it: distribution's log shows a one-byte answer."""
    upstream = make_upstream(distribution.url)
    layer = digest_of(image.layers[0])

    assert await upstream.has_blob("mirror/app", layer)
    assert not await upstream.has_blob("mirror/app", digest_of(b"never pushed"))
    assert not await upstream.has_blob("mirror/none", layer)
    assert f'"GET /v2/mirror/app/blobs/{layer} HTTP/1.1" 206 1 ' in distribution.log_text()


async def test_tags_lists_every_tag(
    make_upstream: UpstreamFactory, distribution: Distribution, image: PushedImage
) -> None:
    upstream = make_upstream(distribution.url)
    assert sorted(await upstream.tags("mirror/app")) == ["v1", "v2"]


async def test_unknown_tag_manifest_blob_and_repository_are_not_found(
    make_upstream: UpstreamFactory, distribution: Distribution, image: PushedImage
) -> None:
    upstream = make_upstream(distribution.url)
    unknown = digest_of(b"nothing like it was pushed")
    with pytest.raises(UpstreamNotFound, match="MANIFEST_UNKNOWN"):
        await upstream.get_manifest("mirror/app", "v9")
    with pytest.raises(UpstreamNotFound):
        await upstream.head_manifest("mirror/app", unknown)
    with pytest.raises(UpstreamNotFound, match="BLOB_UNKNOWN"):
        async with upstream.open_blob("mirror/app", unknown):
            pass
    with pytest.raises(UpstreamNotFound, match="NAME_UNKNOWN"):
        await upstream.tags("mirror/nothing-here")
    assert upstream.available, "answers, even 404s, keep the circuit closed"


async def test_a_registry_without_the_referrers_api_gives_none(
    make_upstream: UpstreamFactory, distribution: Distribution, image: PushedImage
) -> None:
    upstream = make_upstream(distribution.url)
    assert await upstream.referrers("mirror/app", image.digest, None) is None


async def test_names_and_references_are_checked_before_any_request(
    make_upstream: UpstreamFactory, distribution: Distribution
) -> None:
    upstream = make_upstream(distribution.url)
    with pytest.raises(ValueError, match="repository name"):
        await upstream.get_manifest("../v2/_catalog?", "latest")
    with pytest.raises(ValueError, match="tag or digest"):
        await upstream.head_manifest("mirror/app", "latest?x=1")
    with pytest.raises(ValueError, match="digest"):
        async with upstream.open_blob("mirror/app", "sha256:short"):
            pass


def test_an_upstream_url_with_a_path_or_another_scheme_is_refused() -> None:
    for url in ("ftp://host", "https://host/prefix", "https://user:pw@host"):
        with pytest.raises(ValueError, match="upstream URL"):
            Upstream(url)
