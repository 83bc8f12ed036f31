"""The `policies` section: what loads, and each mistake reported with where it is."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from portside.config.loader import ConfigError, load_settings
from portside.config.settings import Settings


def load(tmp_path: Path, section: dict[str, Any]) -> Settings:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"dev": {"policies": section}}))
    return load_settings(path, "dev", environ={})


def test_no_policies_by_default() -> None:
    policies = Settings().policies
    assert (policies.immutable_tags, policies.retention, policies.quotas) == ((), (), ())


def test_a_full_section_loads(tmp_path: Path) -> None:
    policies = load(
        tmp_path,
        {
            "immutable_tags": [{"tags": ["v*"], "tag_regex": r"\d+\.\d+\.\d+"}],
            "retention": [
                {
                    "name": "ci",
                    "repositories": ["ci/*"],
                    "keep_last": 10,
                    "keep_pulled_within": "30d",
                    "remove_older_than": "12w",
                }
            ],
            "quotas": [{"namespaces": ["*"], "max_bytes": "10GiB", "max_tags": 100}],
        },
    ).policies

    assert policies.immutable_tags[0].repositories == ("*",)
    assert policies.retention[0].remove_older_than == timedelta(weeks=12)
    assert policies.quotas[0].max_bytes == 10 * 1024**3


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"immutable_tags": [{"repositories": ["*"]}]}, "needs tags or tag_regex"),
        ({"immutable_tags": [{"tag_regex": "v("}]}, "not a regular expression"),
        ({"retention": [{"repositories": ["*"], "keep_tags": ["x"]}]}, "keep_last or remove"),
        ({"retention": [{"keep_last": 3}]}, "policies.retention[0].repositories"),
        ({"retention": [{"repositories": ["*"], "keep_last": -1}]}, "keep_last"),
        (
            {"retention": [{"repositories": ["*"], "remove_older_than": "0s"}]},
            "a duration above zero",
        ),
        ({"quotas": [{"namespaces": ["team"]}]}, "max_bytes, max_repositories or max_tags"),
        ({"quotas": [{"namespaces": ["team"], "max_bytes": "10G"}]}, "expected a size"),
        ({"quotas": [{"namespaces": [], "max_tags": 1}]}, "policies.quotas[0].namespaces"),
        ({"quota": []}, "policies.quota"),
    ],
)
def test_mistakes_are_reported_with_their_place(
    tmp_path: Path, section: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, section)
    assert fragment in str(raised.value)
