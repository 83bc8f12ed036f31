"""The `auth` settings section: its checks across keys, and its documented example in the sample
config (both forms of it load, and every key carries its description)."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from portside.config import auth
from portside.config.loader import ConfigError, describe, load_settings, sample_config
from portside.config.settings import Settings

HTPASSWD = {"path": "/etc/portside/htpasswd"}
EXTERNAL = {
    "realm": "https://auth.example/token",
    "service": "registry.example",
    "issuer": "auth.example",
    "jwks": "/etc/portside/jwks.json",
}


def load(tmp_path: Path, section: dict[str, Any], **settings: Any) -> Settings:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"dev": {"auth": section, **settings}}))
    return load_settings(path, "dev", environ={})


def test_no_auth_section_is_an_open_registry() -> None:
    assert Settings().auth is None


def test_a_full_section_loads(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "htpasswd": HTPASSWD | {"cache_seconds": 0},
            "token": {"realm": "https://r.example/auth/token", "lifetime": 600},
            "access": {"anonymous_pull": ["public/*"], "user_namespaces": True},
            "search_requires_auth": True,
            "login_limit": {"failures": 3, "window_seconds": 120},
        },
    )
    assert settings.auth is not None
    assert settings.auth.token is not None
    assert settings.auth.token.lifetime == 600
    assert settings.auth.access.anonymous_pull == ("public/*",)
    assert settings.token_key_path == settings.storage_path / "auth" / "token-key.pem"


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"token": {}}, "auth.token issues tokens to the users of an htpasswd file"),
        ({"access": {"anonymous_pull": ["a/*"]}}, "auth needs htpasswd or external_token"),
        ({"htpasswd": HTPASSWD, "token": {}, "external_token": EXTERNAL}, "not both"),
        ({"external_token": EXTERNAL | {"rootcertbundle": "/x.pem"}}, "rootcertbundle or jwks"),
        ({"external_token": EXTERNAL | {"realm": "/auth/token"}}, "absolute http(s) URL"),
        ({"htpasswd": HTPASSWD, "token": {"lifetime": 30}}, "greater than or equal to 60"),
        ({"htpasswd": HTPASSWD, "token": {"realm": "/v2/token"}}, "cannot be under /v1 or /v2"),
        ({"htpasswd": HTPASSWD, "token": {"realm": "auth/token"}}, "expected a path"),
        ({"htpasswd": HTPASSWD, "token": {"realm": "ftp://x/token"}}, "http(s) URL"),
        ({"htpasswd": {}}, "key auth.htpasswd.path: Field required"),
        ({"htpasswd": HTPASSWD, "tokens": {}}, "key auth.tokens: Extra inputs"),
        ({"htpasswd": HTPASSWD, "login_limit": {"failures": 0}}, "greater than or equal to 1"),
        (
            {
                "htpasswd": HTPASSWD,
                "access": {"rules": [{"repositories": ["*"], "actions": ["pull"]}]},
            },
            "a rule must name users, groups or `authenticated: true`",
        ),
        (
            {
                "htpasswd": HTPASSWD,
                "access": {"rules": [{"repositories": ["*"], "users": ["a"], "actions": ["pul"]}]},
            },
            "key auth.access.rules[0].actions[0]",
        ),
    ],
)
def test_bad_sections_are_reported_clearly(
    tmp_path: Path, section: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, section)
    assert fragment in str(raised.value)


def test_token_files_need_paths_with_s3_storage(tmp_path: Path) -> None:
    s3 = {"storage": "s3", "s3_bucket": "b", "database_url": "sqlite:////tmp/x.db"}
    with pytest.raises(
        ConfigError, match=r"auth\.token with storage: s3 needs auth\.token\.key_path"
    ):
        load(tmp_path, {"htpasswd": HTPASSWD, "token": {}}, **s3)
    token = {"key_path": "/k.pem"}
    assert load(tmp_path, {"htpasswd": HTPASSWD, "token": token}, **s3).token_key_path == Path(
        "/k.pem"
    )


def test_refresh_tokens_path_is_accepted_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refresh tokens moved from that file to the metadata database: an old config still
    loads, says once that the key is no longer used, and the settings the workers load back
    (model_dump_json) no longer carry it, so they do not warn again."""
    token = {"key_path": "/k.pem", "refresh_tokens_path": "/r.json"}
    with caplog.at_level(logging.WARNING):
        settings = load(tmp_path, {"htpasswd": HTPASSWD, "token": token})
    warnings = [r for r in caplog.records if "refresh_tokens_path" in r.getMessage()]
    assert len(warnings) == 1
    assert "no longer used" in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert "refresh_tokens_path" not in settings.model_dump_json()

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert Settings.model_validate_json(settings.model_dump_json()) == settings
    assert caplog.records == []


def test_describe_shows_the_section_and_loads_back(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {"htpasswd": HTPASSWD, "token": {"key_path": "/k.pem"}, "access": {"groups": {"g": ["a"]}}},
    )
    described = describe(settings)
    assert "key_path: /k.pem" in described
    path = tmp_path / "described.yml"
    path.write_text("dev:\n" + textwrap.indent(described, "    "))
    assert load_settings(path, "dev", environ={}) == settings


# The sample's commented example ---------------------------------------------------------------

EXAMPLE_LINE = re.compile(r"^    #(?=auth:| {4})")


def examples() -> list[list[str]]:
    """The commented `auth:` examples of the sample, uncommented (one `#` off each line)."""
    blocks: list[list[str]] = []
    inside = False  # in an auth example: other commented examples (mirroring) are not
    for line in sample_config().splitlines():
        if not EXAMPLE_LINE.match(line):
            inside = False
            continue
        if line.startswith("    #auth:"):
            blocks.append([])
            inside = True
        if inside:
            blocks[-1].append("    " + line[5:])
    return blocks


def documented(lines: list[str]) -> dict[tuple[str, ...], str]:
    """The comment above each key line, by the key's path."""
    found: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.removeprefix("#").strip())
            continue
        match = re.match(r"^( *)([a-z_]+):", line)
        if match is None:
            comment = []
            continue
        indent = len(match[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match[2]))
        found[tuple(name for _, name in stack)] = " ".join(comment)
        comment = []
    return found


def test_the_sample_has_two_auth_examples_that_load() -> None:
    blocks = examples()
    assert len(blocks) == 2
    for block in blocks:
        section = yaml.safe_load("\n".join(block))["auth"]
        Settings(auth=section)


SECTIONS: list[tuple[tuple[str, ...], type[BaseModel]]] = [
    (("auth",), auth.AuthSettings),
    (("auth", "htpasswd"), auth.HtpasswdSettings),
    (("auth", "token"), auth.TokenSettings),
    (("auth", "external_token"), auth.ExternalTokenSettings),
    (("auth", "access"), auth.AccessConfig),
    (("auth", "login_limit"), auth.LoginLimitSettings),
]


@pytest.mark.parametrize(
    ("path", "field"),
    [(path, field) for path, model in SECTIONS for field in model.model_fields],
)
def test_the_sample_documents_every_auth_key(path: tuple[str, ...], field: str) -> None:
    docs: dict[tuple[str, ...], str] = {}
    for block in examples():
        docs |= documented(block)
    model = dict(SECTIONS)[path]
    assert docs[(*path, field)] == model.model_fields[field].description
