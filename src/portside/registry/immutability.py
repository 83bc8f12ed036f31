"""Immutable tags (`policies.immutable_tags`): which tags may be neither moved nor deleted once
pushed, and the refusal that names the rule. The stores decide in the transaction that would move
or remove a tag (metadata: put_manifest's `immutable`, delete_manifest's `protected`), so two
racing first pushes of a tag cannot both win."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from portside.auth.permissions import compile_pattern
from portside.config.policies import ImmutableTagRule, label
from portside.metadata.base import TagFilter
from portside.registry.errors import PolicyDenied


@dataclass(frozen=True, slots=True)
class _Rule:
    label: str
    repositories: tuple[re.Pattern[str], ...]
    tags: tuple[re.Pattern[str], ...]

    def covers(self, repository: str) -> bool:
        return any(pattern.fullmatch(repository) for pattern in self.repositories)

    def locks(self, tag: str) -> bool:
        return any(pattern.fullmatch(tag) for pattern in self.tags)


class ImmutableTags:
    def __init__(self, rules: Sequence[ImmutableTagRule] = ()) -> None:
        self._rules = tuple(
            _Rule(
                label(rule, "immutable_tags", index),
                tuple(compile_pattern(p) for p in rule.repositories),
                tuple(compile_pattern(p) for p in rule.tags)
                + ((re.compile(rule.tag_regex),) if rule.tag_regex is not None else ()),
            )
            for index, rule in enumerate(rules)
        )

    def __bool__(self) -> bool:
        return bool(self._rules)

    def rule_for(self, repository: str, tag: str) -> str | None:
        """The label of the first rule making the tag immutable; None if none does."""
        for rule in self._rules:
            if rule.covers(repository) and rule.locks(tag):
                return rule.label
        return None

    def protected(self, repository: str) -> TagFilter | None:
        """Which of the repository's tags are immutable; None if no rule covers it."""
        rules = [rule for rule in self._rules if rule.covers(repository)]
        if not rules:
            return None
        return lambda tag: any(rule.locks(tag) for rule in rules)

    def refusal(self, repository: str, tag: str, doing: str) -> PolicyDenied:
        """DENIED for `doing` (moving, deleting) an immutable tag, naming its rule."""
        rule = self.rule_for(repository, tag) or "policies.immutable_tags"
        reason = f"tag {tag} of {repository} is immutable (rule {rule}): it cannot be {doing}"
        return PolicyDenied(reason, {"repository": repository, "tag": tag, "rule": rule})
