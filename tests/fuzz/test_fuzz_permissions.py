"""Property (d): with auth on (Basic, user_namespaces), alice never reads anything of bob's.

A state machine interleaves bob's pushes (blobs, image manifests, tags, uploads in progress, in
repositories of his own namespace) with alice's attempts on them, in every request shape: GET
and HEAD of blobs and manifests (by tag and by digest), tags lists, referrers, upload status and
chunks on bob's upload URLs, mounts into her own repository with `from` naming bob's (alone,
repeated, after or before one of hers, `mount` repeated), and the repository's name spelt with
case changes, trailing and doubled slashes, dot segments and percent-encoding. Her catalog and
search never list bob/*.

Whatever she sends, she gets no 2xx or 3xx for a read of bob's content, and a mount never makes
bob's blob readable in her repository (she may still have pushed the same bytes herself: bob's
content carries a nonce of its run, so she never has).
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import pytest
from fuzz_registry import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Fuzzed, Request, digest_of
from fuzz_strategies import name_variants
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

pytestmark = pytest.mark.fuzz

READ_OK = range(200, 400)


def spellings(repository: str) -> st.SearchStrategy[str]:
    """The name as it is, half the time (the plain attempt comes first), else a variant."""
    return st.one_of(st.just(repository), name_variants(repository))


class AliceAgainstBob(RuleBasedStateMachine):
    """bob pushes into bob/<run>/...; alice tries to read it. One registry for all runs, a
    namespace of its own for each."""

    blobs = Bundle("blobs")
    manifests = Bundle("manifests")
    uploads = Bundle("uploads")

    def __init__(self, registry: Fuzzed) -> None:
        super().__init__()
        self.registry = registry
        self.run_id = os.urandom(4).hex()
        self.repositories = [f"bob/r{self.run_id}", f"bob/r{self.run_id}/deep/er"]
        self.alice_repository = f"alice/r{self.run_id}"
        self.bob_tags: dict[str, list[str]] = {}
        self.mounted: set[str] = set()

    def send(self, request: Request) -> tuple[int, bytes]:
        outcome = self.registry.run(self.registry.send(request))
        assert not outcome.failed, f"{self.registry}: {request!r}\n  -> {outcome.describe()}"
        return outcome.status, outcome.content

    def as_bob(self, method: str, url: str, body: bytes = b"", **headers: str) -> int:
        status, _ = self.send(Request(method, url, tuple(headers.items()), body, "bob"))
        return status

    def as_alice(self, method: str, url: str, headers: tuple[tuple[str, str], ...] = ()) -> int:
        status, _ = self.send(Request(method, url, headers, b"", "alice"))
        return status

    # bob's side

    @initialize(target=blobs)
    def bob_pushes_a_first_blob(self) -> str:
        return self.bob_pushes_a_blob(b"first", 0)

    @rule(target=blobs, data=st.binary(max_size=32), where=st.integers(0, 1))
    def bob_pushes_a_blob(self, data: bytes, where: int) -> str:
        data = f"bob's {self.run_id} ".encode() + data
        digest = digest_of(data)
        repository = self.repositories[where]
        status = self.as_bob("POST", f"/v2/{repository}/blobs/uploads/?digest={digest}", data)
        assert status == 201
        return f"{repository}@{digest}"

    @rule(target=manifests, blob=blobs, tag=st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))
    def bob_pushes_an_image(self, blob: str, tag: str) -> str:
        repository, digest = blob.split("@")
        config = f'{{"bob": "{self.run_id}", "tag": "{tag}"}}'.encode()
        assert (
            self.as_bob(
                "POST", f"/v2/{repository}/blobs/uploads/?digest={digest_of(config)}", config
            )
            == 201
        )
        size = int(
            self.registry.request("HEAD", f"/v2/{repository}/blobs/{digest}", "bob").headers[
                "content-length"
            ]
        )
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": size}],
            "annotations": {"org.opencontainers.image.description": f"bob secret {self.run_id}"},
        }
        body = json.dumps(document).encode()
        status = self.as_bob(
            "PUT", f"/v2/{repository}/manifests/{tag}", body, **{"Content-Type": OCI_MANIFEST}
        )
        assert status == 201
        self.bob_tags.setdefault(repository, []).append(tag)
        return f"{repository}@{digest_of(body)}@{tag}"

    @rule(target=uploads, where=st.integers(0, 1))
    def bob_starts_an_upload(self, where: int) -> str:
        repository = self.repositories[where]
        outcome = self.registry.request("POST", f"/v2/{repository}/blobs/uploads/", "bob")
        assert outcome.status == 202
        self.as_bob(
            "PATCH", outcome.headers["location"], b"bob's chunk", **{"Content-Range": "0-10"}
        )
        return outcome.headers["location"]

    # alice's side

    @rule(blob=blobs, data=st.data())
    def alice_reads_a_blob(self, blob: str, data: st.DataObject) -> None:
        repository, digest = blob.split("@")
        spelt = data.draw(spellings(repository))
        method = data.draw(st.sampled_from(["GET", "HEAD"]))
        ranged = data.draw(st.sampled_from([(), (("Range", "bytes=0-3"),)]))
        status = self.as_alice(method, f"/v2/{quote(spelt, safe='/%')}/blobs/{digest}", ranged)
        assert status not in READ_OK, (
            f"alice read bob's blob: {method} {spelt} {digest} -> {status}"
        )

    @rule(manifest=manifests, data=st.data())
    def alice_reads_a_manifest(self, manifest: str, data: st.DataObject) -> None:
        repository, digest, tag = manifest.split("@", 2)
        spelt = data.draw(spellings(repository))
        method = data.draw(st.sampled_from(["GET", "HEAD"]))
        reference = data.draw(st.sampled_from([digest, tag]))
        status = self.as_alice(method, f"/v2/{quote(spelt, safe='/%')}/manifests/{reference}")
        assert status not in READ_OK, (
            f"alice read bob's manifest: {method} {spelt} {reference} -> {status}"
        )

    @rule(manifest=manifests, data=st.data())
    def alice_lists_tags_and_referrers(self, manifest: str, data: st.DataObject) -> None:
        repository, digest, _ = manifest.split("@", 2)
        spelt = quote(data.draw(spellings(repository)), safe="/%")
        for url in (
            f"/v2/{spelt}/tags/list",
            f"/v2/{spelt}/tags/list?n=10",
            f"/v2/{spelt}/referrers/{digest}",
        ):
            status = self.as_alice("GET", url)
            assert status not in READ_OK, f"alice listed bob's: GET {url} -> {status}"

    @rule(upload=uploads, data=st.data())
    def alice_touches_an_upload(self, upload: str, data: st.DataObject) -> None:
        repository, _, upload_id = upload.removeprefix("/v2/").partition("/blobs/uploads/")
        spelt = quote(data.draw(spellings(repository)), safe="/%")
        method = data.draw(st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]))
        url = f"/v2/{spelt}/blobs/uploads/{upload_id}"
        if method == "PUT":
            url += f"?digest={digest_of(b'x')}"
        status = self.as_alice(method, url)
        assert status not in READ_OK, f"alice used bob's upload: {method} {url} -> {status}"
        assert self.as_bob("GET", upload) == 204, "bob's upload went"

    @rule(blob=blobs, data=st.data())
    def alice_mounts_from_bob(self, blob: str, data: st.DataObject) -> None:
        repository, digest = blob.split("@")
        mine = self.alice_repository
        spelt = quote(data.draw(spellings(repository)), safe="/%")
        query = data.draw(
            st.sampled_from(
                [
                    f"mount={digest}&from={spelt}",
                    f"mount={digest}&from={mine}&from={spelt}",
                    f"mount={digest}&from={spelt}&from={mine}",
                    f"from={spelt}&mount={digest}&mount={digest_of(b'other')}",
                    f"mount={digest_of(b'other')}&mount={digest}&from={spelt}",
                    f"mount={digest}&from={spelt}&digest={digest}",
                ]
            )
        )
        self.as_alice("POST", f"/v2/{mine}/blobs/uploads/?{query}")
        # Whatever the answer, the blob must not have become hers.
        for method in ("HEAD", "GET"):
            status = self.as_alice(method, f"/v2/{mine}/blobs/{digest}")
            assert status not in READ_OK, f"alice mounted bob's blob with ?{query}: now {status}"

    @invariant()
    def alice_catalog_and_search_show_nothing_of_bob(self) -> None:
        for url in (
            "/v2/_catalog",
            "/v2/_catalog?n=1000",
            f"/v1/search?q={self.run_id}",
            "/v1/search?q=bob",
        ):
            status, content = self.send(Request("GET", url, (), b"", "alice"))
            if status == 200:
                assert b"bob/" not in content, (
                    f"alice saw bob's repositories: GET {url} -> {content[:300]!r}"
                )


def test_alice_never_reads_what_bob_pushes(fuzzed_with_auth: Fuzzed) -> None:
    run_state_machine_as_test(
        lambda: AliceAgainstBob(fuzzed_with_auth),
        settings=settings(max_examples=max(5, settings.default.max_examples // 2)),
    )
