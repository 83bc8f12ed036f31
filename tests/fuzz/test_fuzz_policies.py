"""Properties (a) and (b) for what keeping the registry in shape adds: DELETE
/v2/_portside/repositories/<name> with any name and any caller gets no 5xx, and a refusal changes
nothing; and the `policies` section: any data either loads or is refused as invalid settings,
and rules that load judge any repository, tag and namespace without raising."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fuzz_registry import Fuzzed, Request
from fuzz_strategies import JSON_VALUES, names, nasty_text
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from portside.config.settings import Settings
from portside.metadata.base import TagHistory
from portside.registry.immutability import ImmutableTags
from portside.registry.quotas import Quotas, namespace_of
from portside.registry.retention import Retention

pytestmark = pytest.mark.fuzz

CALLERS = (None, "alice", "bob", "admin")
VALID = {
    "immutable_tags": [{"repositories": ["alice/*"], "tags": ["v*"], "tag_regex": r"\d+"}],
    "retention": [
        {
            "repositories": ["*"],
            "keep_last": 2,
            "keep_tags": ["latest"],
            "keep_pulled_within": "1d",
            "remove_older_than": "30d",
        }
    ],
    "quotas": [{"namespaces": ["*"], "max_bytes": "1GiB", "max_repositories": 3, "max_tags": 9}],
}


class Unused:
    """A store for rules that are only judged here: any call is a bug."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was used: {name}")


PATTERN_TEXT = st.one_of(nasty_text, st.sampled_from(["*", "?", "v*", "a/*", "[", "(", "\\"]))


@given(data=st.data())
def test_a_repository_delete_gets_no_5xx_and_a_refusal_changes_nothing(
    fuzzed: Fuzzed, data: st.DataObject
) -> None:
    name = data.draw(names(fuzzed.seeded), label="name")
    caller = data.draw(st.sampled_from(CALLERS), label="caller")
    fuzzed.check(Request("DELETE", f"/v2/_portside/repositories/{name}", login=caller))


RULE_KEYS = (
    "name",
    "repositories",
    "namespaces",
    "tags",
    "tag_regex",
    "keep_last",
    "keep_tags",
    "keep_pulled_within",
    "remove_older_than",
    "max_bytes",
    "max_repositories",
    "max_tags",
)
RULE_VALUES = st.one_of(
    JSON_VALUES,
    PATTERN_TEXT,
    st.lists(PATTERN_TEXT, max_size=3),
    st.sampled_from(["1d", "0s", "-1h", "10GiB", "1.5KB", "7", "1e400", "nan"]),
    st.integers(-(2**70), 2**70),
)
RULES = st.dictionaries(st.sampled_from(RULE_KEYS), RULE_VALUES, max_size=6)
SECTIONS = st.one_of(
    JSON_VALUES,
    st.just(VALID),
    st.dictionaries(
        st.sampled_from([*VALID, "unknown"]),
        st.one_of(st.lists(RULES, max_size=3), JSON_VALUES),
        max_size=4,
    ),
    st.sampled_from(list(VALID)).flatmap(
        lambda key: RULES.map(lambda rule: {key: [{**VALID[key][0], **rule}]})
    ),
)


@given(data=st.data())
def test_any_policies_section_loads_or_is_invalid(data: st.DataObject) -> None:
    section = data.draw(SECTIONS, label="policies")
    try:
        settings = Settings(policies=section)
    except ValidationError:
        return
    policies = settings.policies
    repository = data.draw(st.one_of(nasty_text, st.just("alice/app")), label="repository")
    tag = data.draw(st.one_of(nasty_text, st.just("v1")), label="tag")
    immutable = ImmutableTags(policies.immutable_tags)
    immutable.rule_for(repository, tag)
    Quotas(policies.quotas, Unused()).quota_of(namespace_of(repository))
    retention = Retention(policies.retention, Unused(), immutable)
    now = datetime.now(UTC)
    history = [TagHistory(tag, "sha256:0", now - timedelta(days=400), None)]
    retention.judge(repository, history, now)


@given(
    rule=st.fixed_dictionaries(
        {"repositories": st.lists(PATTERN_TEXT, max_size=3)},
        optional={"tags": st.lists(PATTERN_TEXT, max_size=3), "tag_regex": PATTERN_TEXT},
    )
)
def test_an_immutable_rule_with_any_patterns_loads_or_is_invalid(rule: dict[str, Any]) -> None:
    try:
        settings = Settings(policies={"immutable_tags": [rule]})
    except ValidationError:
        return
    ImmutableTags(settings.policies.immutable_tags).rule_for("alice/app", "v1")
