"""Properties (a) and (b) over every endpoint: any method on any path (routes and near misses of
them, with fuzzed names, references, digests and upload ids), with any query string (the
parameters the API reads, repeated: `from`, `mount`, `digest`, `n`, `last`, `artifactType`, `q`,
`page`), any headers (Content-Range, Content-Length that disagrees with the body, Range, Accept,
Content-Type, junk Basic and Bearer credentials, each possibly twice) and any body.

(a) no response is a 5xx, and nothing escapes the app;
(b) a 4xx changes nothing: the metadata store's whole graph and the blob files are the same
    before and after.

The one exclusion from (b): a PUT that closes an upload with a digest that does not match its
bytes (400 DIGEST_INVALID) ends that upload session, as distribution's PutBlobUploadComplete
cancels it (registry/handlers/blobupload.go); the session's row may go, nothing else may change.
"""

from __future__ import annotations

import pytest
from fuzz_registry import Fuzzed
from fuzz_strategies import FAMILIES, requests
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_no_request_gets_a_5xx_and_none_refused_changes_anything(
    fuzzed: Fuzzed, family: str, data: st.DataObject
) -> None:
    fuzzed.check(data.draw(requests(fuzzed.seeded, family), label="request"))


@given(data=st.data())
def test_a_sequence_of_requests_gets_no_5xx_and_no_refused_one_changes_anything(
    fuzzed: Fuzzed, data: st.DataObject
) -> None:
    """Several requests in a row, so that one's effect (an upload advanced, a tag moved, a
    manifest deleted) is the next one's starting point."""
    for request in data.draw(st.lists(requests(fuzzed.seeded), min_size=2, max_size=6)):
        fuzzed.check(request)
