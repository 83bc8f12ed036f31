"""Retention rules (`policies.retention`): which tags go, and why; applied by the garbage
collector before it plans, so that what they leave unreferenced goes in the same run.

Per repository, the first rule naming it decides, over its tags newest push first. A tag stays
if it is immutable, matches keep_tags, or was pulled within keep_pulled_within; otherwise it
goes when it is beyond the keep_last newest (if set) and pushed longer ago than
remove_older_than (if set). keep_last counts every tag, kept for another reason or not.

Each removal is re-checked in the transaction that makes it (the tag still on the same
manifest, not pushed or pulled since it was judged) and audited there; a manifest left without
a tag then goes too, unless another manifest that stays needs it (an index's child, a referrer's
subject: the collector's own rule).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from portside.auth.permissions import compile_pattern
from portside.config.policies import RetentionRule, label
from portside.metadata.base import (
    AuditEntry,
    CollectorStore,
    Journal,
    Notice,
    PolicyStore,
    RequestStore,
    TagHistory,
)
from portside.registry.events import Action, Origin, Recorder, Target
from portside.registry.immutability import ImmutableTags

log = logging.getLogger("portside.retention")

PAGE: Final = 1000  # repository names read at a time
ACTOR: Final = "retention"
ACTION: Final = "retention-delete"
# Who the endpoints are told removed a tag (as distribution tells of a tag's delete).
ORIGIN: Final = Origin(actor=ACTOR, address="")


class RetentionStore(PolicyStore, RequestStore, CollectorStore, Protocol):
    """Repositories and their tags' times, and deletion of tags and untagged manifests."""


@dataclass(frozen=True, slots=True)
class Removal:
    repository: str
    tag: TagHistory
    rule: str
    reason: str
    pulled_before: datetime | None  # judged not pulled since then


@dataclass(frozen=True, slots=True)
class _Rule:
    label: str
    repositories: tuple[re.Pattern[str], ...]
    keep_tags: tuple[re.Pattern[str], ...]
    rule: RetentionRule


def _ago(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:.1f}d" if days >= 1 else f"{span.total_seconds() / 3600:.1f}h"


class Retention:
    def __init__(
        self,
        rules: Sequence[RetentionRule],
        metadata: RetentionStore,
        immutable: ImmutableTags | None = None,
        audited: bool = False,
        events: Recorder | None = None,
    ) -> None:
        self._rules = tuple(
            _Rule(
                label(rule, "retention", index),
                tuple(compile_pattern(p) for p in rule.repositories),
                tuple(compile_pattern(p) for p in rule.keep_tags),
                rule,
            )
            for index, rule in enumerate(rules)
        )
        self._metadata = metadata
        self._events = events or Recorder()
        self._immutable = immutable or ImmutableTags()
        self._audited = audited

    def _rule_for(self, repository: str) -> _Rule | None:
        return next(
            (r for r in self._rules if any(p.fullmatch(repository) for p in r.repositories)),
            None,
        )

    async def plan(self, now: datetime) -> list[Removal]:
        """What the rules remove now, repository by repository, in name order."""
        removals: list[Removal] = []
        last: str | None = None
        while page := await self._metadata.list_repositories(PAGE, last):
            for repository in page:
                if self._rule_for(repository) is not None:
                    history = await self._metadata.tag_history(repository)
                    removals += self.judge(repository, history, now)
            if len(page) < PAGE:
                break
            last = page[-1]
        return removals

    def judge(self, repository: str, history: list[TagHistory], now: datetime) -> list[Removal]:
        """Which of the repository's tags (as history has them) the rules remove at `now`."""
        rule = self._rule_for(repository)
        if rule is None:
            return []
        settings = rule.rule
        within = settings.keep_pulled_within
        pulled_before = now - within if within is not None else None
        older = settings.remove_older_than
        newest_first = sorted(history, key=lambda t: (t.pushed_at, t.name), reverse=True)
        removals = []
        for index, tag in enumerate(newest_first):
            if self._immutable.rule_for(repository, tag.name) is not None:
                continue
            if any(pattern.fullmatch(tag.name) for pattern in rule.keep_tags):
                continue
            pulled = tag.pulled_at
            if pulled_before is not None and pulled is not None and pulled >= pulled_before:
                continue
            reasons = []
            if settings.keep_last is not None:
                if index < settings.keep_last:
                    continue
                reasons.append(f"not among the {settings.keep_last} pushed last")
            if older is not None:
                if tag.pushed_at >= now - older:
                    continue
                reasons.append(f"pushed {_ago(now - tag.pushed_at)} ago (over {_ago(older)})")
            removals.append(Removal(repository, tag, rule.label, ", ".join(reasons), pulled_before))
        return removals

    async def apply(
        self, now: datetime, keep_going: Callable[[], Awaitable[None]] | None = None
    ) -> list[Removal]:
        """Remove what plan(now) finds, each tag if it is still as judged, then the manifests
        left without a tag; what was removed. keep_going is awaited after each repository (the
        collector renews its lease)."""
        done: list[Removal] = []
        by_repository: dict[str, list[Removal]] = {}
        for removal in await self.plan(now):
            by_repository.setdefault(removal.repository, []).append(removal)
        for repository, removals in by_repository.items():
            for removal in removals:
                tag = removal.tag
                journal = self._journal(now, removal)
                if await self._metadata.expire_tag(repository, tag, removal.pulled_before, journal):
                    log.info(
                        "retention removed %s:%s (%s), rule %s: %s",
                        repository,
                        tag.name,
                        tag.digest,
                        removal.rule,
                        removal.reason,
                    )
                    done.append(removal)
            digests = {r.tag.digest for r in done if r.repository == repository}
            if digests:
                audit = self._entry(now, {"reason": "untagged by retention"})
                await self._metadata.delete_manifests(
                    {repository: digests}, now, True, audit, self._manifest_deleted
                )
            if keep_going is not None:
                await keep_going()
        return done

    def _manifest_deleted(self, repository: str, digest: str) -> tuple[Notice, ...]:
        """The event of a manifest deleted by digest, as the API's delete sends it."""
        return self._events.journal(Action.DELETE, Target(repository, digest), ORIGIN).notices

    def _journal(self, now: datetime, removal: Removal) -> Journal:
        target = Target(removal.repository, tag=removal.tag.name)
        notices = self._events.journal(Action.DELETE, target, ORIGIN, audited=False).notices
        if not self._audited:
            return Journal(notices)
        detail = {"rule": removal.rule, "reason": removal.reason}
        entry = AuditEntry(
            now,
            ACTION,
            actor=ACTOR,
            repository=removal.repository,
            digest=removal.tag.digest,
            tag=removal.tag.name,
            detail=json.dumps(detail, separators=(",", ":")),
        )
        return Journal(notices, (entry,))

    def _entry(self, now: datetime, detail: dict[str, str]) -> AuditEntry | None:
        if not self._audited:
            return None
        return AuditEntry(now, ACTION, actor=ACTOR, detail=json.dumps(detail))
