"""Property (e): blob uploads against a model. POST (a session, or a whole blob with ?digest=),
PATCH with and without Content-Range (in order, out of order, repeated), PUT with the right and
a wrong digest and an optional last chunk, GET status, DELETE, in any order, on live and ended
sessions alike, and GETs of blobs.

The model: a session holds the bytes of the chunks acknowledged (202) in order; a PUT that gets
201 makes exactly those bytes (plus its last chunk) a blob of the repository; a blob is readable
with the right bytes once acknowledged, and not before. Where the spec is definite the status is
too: an in-order chunk is 202, a chunk whose Content-Range does not start at the session's
offset 416, an ended session 404 for every method; a PUT with the right digest 201, a wrong one
400 DIGEST_INVALID (which also ends the session, as distribution does). No request ever gets a
5xx, and every status response reports the model's offset in its Range header.
"""

from __future__ import annotations

import os

import pytest
from fuzz_registry import Fuzzed, Outcome, Request, digest_of
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

pytestmark = pytest.mark.fuzz

chunks = st.binary(min_size=1, max_size=40)


class Uploads(RuleBasedStateMachine):
    sessions = Bundle("sessions")

    def __init__(self, registry: Fuzzed) -> None:
        super().__init__()
        self.registry = registry
        # alice's own namespace: allowed with auth on, an ordinary name with it off
        self.repository = f"alice/up{os.urandom(4).hex()}"
        self.live: dict[str, bytes] = {}  # Location -> bytes acknowledged
        self.ended: set[str] = set()
        self.acknowledged: dict[str, bytes] = {}  # digest -> bytes
        self.seen: dict[str, bytes] = {}  # digest -> bytes of anything sent, acknowledged or not

    def send(self, method: str, url: str, body: bytes = b"", **headers: str) -> Outcome:
        request = Request(method, url, tuple(headers.items()), body, "alice")
        outcome = self.registry.run(self.registry.send(request))
        assert not outcome.failed, f"{self.registry}: {request!r}\n  -> {outcome.describe()}"
        return outcome

    def expect(self, outcome: Outcome, *statuses: int, what: str) -> None:
        assert outcome.status in statuses, f"{what}: {outcome.describe()}"

    def remember(self, data: bytes) -> str:
        digest = digest_of(data)
        self.seen[digest] = data
        return digest

    @rule(target=sessions)
    def start(self) -> str:
        outcome = self.send("POST", f"/v2/{self.repository}/blobs/uploads/")
        self.expect(outcome, 202, what="POST")
        location = outcome.headers["location"]
        self.live[location] = b""
        return location

    @rule(data=chunks, correct=st.booleans())
    def push_whole(self, data: bytes, correct: bool) -> None:
        digest = self.remember(data)
        sent = digest if correct else self.remember(data + b"!")
        outcome = self.send("POST", f"/v2/{self.repository}/blobs/uploads/?digest={sent}", data)
        if correct:
            self.expect(outcome, 201, what="POST ?digest= with the right digest")
            self.acknowledged[digest] = data
        else:
            self.expect(outcome, 400, what="POST ?digest= with a wrong digest")

    @rule(
        session=sessions,
        data=chunks,
        shape=st.sampled_from(["range", "range", "plain", "early", "late", "zero", "junk"]),
    )
    def patch(self, session: str, data: bytes, shape: str) -> None:
        self.remember(data)
        offset = len(self.live.get(session, b""))
        start = {"early": offset - 1, "late": offset + 1, "zero": 0}.get(shape, offset)
        headers = {"Content-Type": "application/octet-stream"}
        if shape == "junk":
            headers["Content-Range"] = "bytes=x-y"
        elif shape != "plain":
            if shape == "early" and offset == 0:
                start = 5
            headers["Content-Range"] = f"{start}-{start + len(data) - 1}"
        outcome = self.send("PATCH", session, data, **headers)
        if session in self.ended:
            # A malformed Content-Range may be refused before the session is looked up.
            statuses = (404, 416) if shape == "junk" else (404,)
            self.expect(outcome, *statuses, what="PATCH on an ended session")
            return
        in_order = shape in ("range", "plain") or (start == offset and shape != "junk")
        if in_order:
            self.expect(outcome, 202, what=f"PATCH in order ({shape})")
            self.live[session] += data
            self.seen[digest_of(self.live[session])] = self.live[session]
            assert outcome.headers["range"] == f"0-{len(self.live[session]) - 1}"
        else:
            self.expect(outcome, 400, 416, what=f"PATCH out of order ({shape})")

    @rule(
        session=sessions,
        last=st.binary(max_size=20),
        correct=st.booleans(),
        ranged=st.booleans(),
    )
    def finish(self, session: str, last: bytes, correct: bool, ranged: bool) -> None:
        whole = self.live.get(session, b"") + last
        digest = self.remember(whole)
        sent = digest if correct else self.remember(whole + b"?")
        headers = {}
        if ranged and last:
            offset = len(self.live.get(session, b""))
            headers["Content-Range"] = f"{offset}-{offset + len(last) - 1}"
        outcome = self.send("PUT", f"{session}?digest={sent}", last, **headers)
        if session in self.ended:
            self.expect(outcome, 404, what="PUT on an ended session")
            return
        if correct:
            self.expect(outcome, 201, what="PUT with the right digest")
            self.acknowledged[digest] = whole
        else:
            self.expect(outcome, 400, what="PUT with a wrong digest")
        self.live.pop(session)
        self.ended.add(session)

    @rule(session=sessions)
    def status(self, session: str) -> None:
        outcome = self.send("GET", session)
        if session in self.ended:
            self.expect(outcome, 404, what="GET status of an ended session")
            return
        self.expect(outcome, 204, what="GET status")
        assert outcome.headers["range"] == f"0-{max(len(self.live[session]) - 1, 0)}"

    @rule(session=sessions)
    def cancel(self, session: str) -> None:
        outcome = self.send("DELETE", session)
        if session in self.ended:
            self.expect(outcome, 404, what="DELETE of an ended session")
            return
        self.expect(outcome, 204, what="DELETE")
        self.live.pop(session)
        self.ended.add(session)

    @rule(session=sessions, again=st.sampled_from(["PUT", "PATCH", "GET", "DELETE"]))
    def after_the_end(self, session: str, again: str) -> None:
        """Anything on a session after it ended is 404 (ended ones stay in the bundle)."""
        if session not in self.ended:
            return
        url = f"{session}?digest={digest_of(b'')}" if again == "PUT" else session
        self.expect(self.send(again, url), 404, what=f"{again} after the end")

    @invariant()
    def acknowledged_blobs_read_back_and_others_do_not(self) -> None:
        for digest, data in self.seen.items():
            outcome = self.send("GET", f"/v2/{self.repository}/blobs/{digest}")
            if digest in self.acknowledged:
                assert outcome.status == 200, f"acknowledged {digest} -> {outcome.describe()}"
                assert outcome.content == data
            else:
                assert outcome.status == 404, f"never acknowledged {digest} -> {outcome.describe()}"


def test_uploads_follow_the_model(fuzzed: Fuzzed) -> None:
    if fuzzed.mode == "auth-token":
        pytest.skip(
            "alice's token covers the seeded repositories only; auth-basic has her namespace"
        )
    run_state_machine_as_test(
        lambda: Uploads(fuzzed),
        settings=settings(max_examples=max(4, settings.default.max_examples // 3)),
    )
