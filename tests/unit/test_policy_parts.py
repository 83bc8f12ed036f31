"""The policies' pure parts: pull times batched per tag, a quota's blob checks and refusals, the
immutable rules and retention's judgement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from portside.config.policies import ImmutableTagRule, QuotaRule, RetentionRule
from portside.metadata.base import Footprint, NamespaceLimits, OverQuota, TagHistory, TagPull
from portside.registry.errors import PolicyDenied
from portside.registry.immutability import ImmutableTags
from portside.registry.pull_times import PullTimes
from portside.registry.quotas import Quotas, namespace_of
from portside.registry.retention import Retention

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Store:
    """What the parts ask of metadata, in memory."""

    def __init__(self) -> None:
        self.pulls: list[list[TagPull]] = []
        self.footprint = Footprint(0, 0, 0)
        self.held: set[str] = set()

    async def record_pulls(self, pulls: Sequence[TagPull]) -> None:
        self.pulls.append(list(pulls))

    async def namespace_footprint(self, namespace: str) -> Footprint:
        return self.footprint

    async def namespace_holds(self, namespace: str, digest: str) -> bool:
        return digest in self.held


def test_pulls_are_written_a_batch_at_a_time_each_tag_once_a_minute() -> None:
    store, now = Store(), [NOW]
    times = PullTimes(store, lambda: now[0])  # type: ignore[arg-type]
    for _ in range(3):
        times.note("app", "v1")
    times.note("app", "v2")
    asyncio.run(times.flush())
    now[0] += timedelta(seconds=30)
    times.note("app", "v1")  # written 30 s ago: skipped
    asyncio.run(times.flush())
    now[0] += timedelta(seconds=31)
    times.note("app", "v1")
    asyncio.run(times.flush())

    assert store.pulls == [
        [TagPull("app", "v1", NOW), TagPull("app", "v2", NOW)],
        [TagPull("app", "v1", NOW + timedelta(seconds=61))],
    ]


def test_namespaces() -> None:
    assert [namespace_of(n) for n in ("team/app", "team/a/b", "app")] == ["team", "team", ""]


def test_a_blob_is_checked_against_the_usage_as_it_is_now() -> None:
    store = Store()
    rule = QuotaRule(namespaces=("*",), max_bytes=1000)
    quotas = Quotas([rule], store)  # type: ignore[arg-type]

    asyncio.run(quotas.check_blob("team/app", 1000))
    store.footprint = Footprint(950, 1, 1)  # another process stored meanwhile
    store.held.add("sha256:held")
    asyncio.run(quotas.check_blob("team/app", 100, "sha256:held"))  # adds nothing
    with pytest.raises(PolicyDenied) as refused:
        asyncio.run(quotas.check_blob("team/app", 100, "sha256:new"))
    assert "950 of 1,000 bytes used, this push needs 100 more" in refused.value.describe()


def test_a_manifest_refused_by_the_store_is_denied_with_the_usage_and_the_limit() -> None:
    rule = QuotaRule(name="team", namespaces=("team",), max_tags=2, max_repositories=1)
    quotas = Quotas([rule], Store())  # type: ignore[arg-type]

    assert quotas.limits("team/app") == NamespaceLimits("team", None, 1, 2)
    assert quotas.limits("other/app") is None
    refused = quotas.refusal(OverQuota("team", "tags", 2, 2, 1))
    assert "quota exceeded for namespace team (rule team): 2 of 2 tags used" in refused.describe()
    assert refused.detail == {
        "namespace": "team",
        "rule": "team",
        "limit": "tags",
        "used": 2,
        "max": 2,
        "requested": 1,
    }


def test_only_namespaces_a_rule_names_have_a_quota() -> None:
    rules = [QuotaRule(namespaces=("team",), max_tags=1), QuotaRule(namespaces=("*",), max_tags=9)]
    quotas = Quotas(rules, Store())  # type: ignore[arg-type]
    team, other = quotas.quota_of("team"), quotas.quota_of("other")

    assert team is not None
    assert team.label == "policies.quotas[0]"
    assert other is not None
    assert other.rule.max_tags == 9


def test_immutable_rules_by_pattern_and_regex() -> None:
    immutable = ImmutableTags(
        [
            ImmutableTagRule(name="releases", repositories=("team/*",), tags=("v*",)),
            ImmutableTagRule(tag_regex=r"\d+\.\d+\.\d+"),
        ]
    )
    protected = immutable.protected("team/app")

    assert immutable.rule_for("team/app", "v1.0") == "releases"
    assert immutable.rule_for("other", "1.2.3") == "policies.immutable_tags[1]"
    assert immutable.rule_for("other", "v1.0") is None
    assert immutable.rule_for("other", "1.2.3-rc1") is None  # the regex matches whole tags
    assert protected is not None
    assert protected("v2")
    assert not protected("latest")


def tag(name: str, days_ago: float, pulled_days_ago: float | None = None) -> TagHistory:
    pulled = None if pulled_days_ago is None else NOW - timedelta(days=pulled_days_ago)
    return TagHistory(name, f"sha256:{name}", NOW - timedelta(days=days_ago), pulled)


def test_retention_judges_newest_first_and_keeps_what_the_rule_keeps() -> None:
    rule = RetentionRule(
        repositories=("*",),
        keep_last=2,
        keep_tags=("latest",),
        keep_pulled_within=timedelta(days=7),
        remove_older_than=timedelta(days=30),
    )
    immutable = ImmutableTags([ImmutableTagRule(tags=("v*",))])
    retention = Retention([rule], Store(), immutable)  # type: ignore[arg-type]
    history = [
        tag("new", 1),
        tag("newer", 0),
        tag("old", 40),
        tag("recent-but-beyond", 10),
        tag("latest", 50),
        tag("v1", 60),
        tag("pulled", 50, pulled_days_ago=2),
        tag("pulled-long-ago", 50, pulled_days_ago=20),
    ]

    removed = retention.judge("app", history, NOW)

    assert sorted(r.tag.name for r in removed) == ["old", "pulled-long-ago"]
    assert "not among the 2 pushed last" in removed[0].reason
    assert "over 30.0d" in removed[0].reason
