"""Tests of portside.config: file and flavor choice, `_env:`, errors, describe, the sample."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from portside.config import loader
from portside.config.loader import ConfigError, describe, load_settings, sample_config
from portside.config.settings import Settings, default_workers

GiB = 1024**3

CLASSIC = """\
common: &common
    issue: '"from common"'
    loglevel: _env:LOGLEVEL:info
    storage_path: _env:STORAGE_PATH:/tmp/classic
dev:
    <<: *common
    loglevel: debug
prod:
    <<: *common
    listen: 0.0.0.0:5000
test:
    <<: *common
    issue: test
"""


def write(tmp_path: Path, text: str, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def one_flavor(tmp_path: Path, line: str) -> Path:
    return write(tmp_path, f"dev:\n    {line}\n")


def test_merge_keys_share_common_and_let_flavors_override(tmp_path: Path) -> None:
    path = write(tmp_path, CLASSIC)

    dev = load_settings(path, "dev", environ={})
    prod = load_settings(path, "prod", environ={})

    assert (dev.issue, dev.loglevel, dev.listen) == ('"from common"', "debug", "127.0.0.1:5000")
    assert (prod.issue, prod.loglevel, prod.listen) == ('"from common"', "info", "0.0.0.0:5000")
    assert dev.storage_path == prod.storage_path == Path("/tmp/classic")


@pytest.mark.parametrize(
    ("line", "environ", "field", "expected"),
    [
        ("loglevel: _env:LOGLEVEL:info", {}, "loglevel", "info"),
        ("loglevel: _env:LOGLEVEL:info", {"LOGLEVEL": "error"}, "loglevel", "error"),
        ("loglevel: _env:LOGLEVEL", {"LOGLEVEL": "warning"}, "loglevel", "warning"),
        ("loglevel: _env:LOGLEVEL:info", {"LOGLEVEL": "WARNING"}, "loglevel", "warning"),
        # The default runs to the end of the value, colons included.
        ("listen: _env:LISTEN:0.0.0.0:5000", {}, "listen", "0.0.0.0:5000"),
        (
            "database_url: _env:DB:postgresql://u:pw@db:5432/meta",
            {},
            "database_url",
            "postgresql://u:pw@db:5432/meta",
        ),
        # The text is read as a YAML scalar: booleans, numbers and null.
        ("debug: _env:DEBUG:false", {}, "debug", False),
        ("debug: _env:DEBUG:false", {"DEBUG": "true"}, "debug", True),
        ("debug: _env:DEBUG:false", {"DEBUG": "yes"}, "debug", True),
        ("workers: _env:WORKERS:3", {}, "workers", 3),
        ("workers: _env:WORKERS:null", {}, "workers", default_workers()),
        ("database_url: _env:DB", {"DB": ""}, "database_url", None),
        # Unset without a default: null, the key's default, as in the classic registry.
        ("database_url: _env:DB", {}, "database_url", None),
        ("workers: _env:WORKERS", {}, "workers", default_workers()),
        ("max_blob_size: _env:MAX_BLOB:10GiB", {}, "max_blob_size", 10 * GiB),
        # A key that wants a string gets the text as written, whatever YAML would make of it.
        ("issue: _env:ISSUE:42", {}, "issue", "42"),
        ("issue: _env:ISSUE", {"ISSUE": "off"}, "issue", "off"),
        ("issue: _env:ISSUE", {"ISSUE": "'a': b # c"}, "issue", "'a': b # c"),
        ("listen: _env:LISTEN", {"LISTEN": "[::1]:5000"}, "listen", "[::1]:5000"),
        ("storage_path: _env:STORAGE_PATH:/srv/a:b", {}, "storage_path", Path("/srv/a:b")),
    ],
)
def test_env_values(
    tmp_path: Path, line: str, environ: dict[str, str], field: str, expected: object
) -> None:
    settings = load_settings(one_flavor(tmp_path, line), environ=environ)

    assert getattr(settings, field) == expected


class _Section(BaseModel):
    token: str
    ports: list[int]


class _Nested(Settings):
    section: _Section | None = None


def test_env_values_at_any_depth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "Settings", _Nested)
    path = write(
        tmp_path,
        """\
        dev:
            section:
                token: _env:TOKEN
                ports: [_env:PORT:5000, 6000]
        """,
    )

    settings = load_settings(path, environ={"TOKEN": "1234"})

    assert isinstance(settings, _Nested)
    assert settings.section == _Section(token="1234", ports=[5000, 6000])
    with pytest.raises(ConfigError, match=r"key section\.ports\[0\]: .*valid integer"):
        load_settings(path, environ={"TOKEN": "t", "PORT": "http"})


@pytest.mark.parametrize(
    ("flavor", "environ", "expected"),
    [
        (None, {}, "dev"),
        (None, {"SETTINGS_FLAVOR": ""}, "dev"),
        (None, {"SETTINGS_FLAVOR": "prod"}, "prod"),
        ("test", {"SETTINGS_FLAVOR": "prod"}, "test"),
        ("common", {}, "common"),
    ],
)
def test_flavor_from_argument_then_settings_flavor_then_dev(
    tmp_path: Path, flavor: str | None, environ: dict[str, str], expected: str
) -> None:
    path = write(
        tmp_path,
        "".join(f"{name}:\n    issue: {name}\n" for name in ("common", "dev", "prod", "test")),
    )

    assert load_settings(path, flavor, environ=environ).issue == expected


def test_file_from_argument_then_docker_registry_config_then_built_in(tmp_path: Path) -> None:
    argument = write(tmp_path, "dev:\n    issue: argument\n", "argument.yml")
    from_env = write(tmp_path, "dev:\n    issue: environment\n", "env.yml")
    environ = {"DOCKER_REGISTRY_CONFIG": str(from_env)}

    assert load_settings(argument, environ=environ).issue == "argument"
    assert load_settings(str(argument), environ=environ).issue == "argument"
    assert load_settings(environ=environ).issue == "environment"
    assert load_settings(environ={"DOCKER_REGISTRY_CONFIG": ""}).issue == Settings().issue
    assert load_settings(environ={}).storage_path == Path("/tmp/registry")


@pytest.mark.parametrize("flavor", ["common", "dev", "prod", "test"])
def test_built_in_config_keeps_everything_under_storage_path(flavor: str) -> None:
    settings = load_settings(flavor=flavor, environ={"STORAGE_PATH": "/srv/registry"})

    assert settings.storage_path == Path("/srv/registry")
    assert settings.metadata_url == "sqlite:////srv/registry/registry.db"
    assert settings.listen == "127.0.0.1:5000"


def test_built_in_config_reads_listen_loglevel_and_workers_from_the_environment() -> None:
    environ = {"PORTSIDE_LISTEN": "0.0.0.0:6000", "LOGLEVEL": "error", "PORTSIDE_WORKERS": "5"}

    settings = load_settings(flavor="prod", environ=environ)

    assert (settings.host, settings.port) == ("0.0.0.0", 6000)
    assert (settings.loglevel, settings.workers) == ("error", 5)
    assert load_settings(flavor="prod", environ={}).workers == default_workers()


def test_built_in_dev_flavor_is_chatty() -> None:
    settings = load_settings(environ={})

    assert (settings.loglevel, settings.debug) == ("debug", True)


def test_overrides_come_last_and_none_means_no_override(tmp_path: Path) -> None:
    path = write(tmp_path, "dev:\n    listen: _env:LISTEN:127.0.0.1:5000\n    issue: file\n")

    settings = load_settings(
        path,
        environ={"LISTEN": "10.0.0.1:5000"},
        overrides={"listen": "0.0.0.0:5001", "issue": None},
    )

    assert (settings.listen, settings.issue) == ("0.0.0.0:5001", "file")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4MiB", 4 * 1024**2),
        ("4 mib", 4 * 1024**2),
        ("4Mi", 4 * 1024**2),
        ("1.5GB", 1_500_000_000),
        ("2048", 2048),
        (2048, 2048),
        ("8kB", 8000),
    ],
)
def test_sizes_take_units(tmp_path: Path, value: object, expected: int) -> None:
    path = write(tmp_path, yaml.safe_dump({"dev": {"max_manifest_size": value}}))

    assert load_settings(path, environ={}).max_manifest_size == expected


def config_error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "flavor", "environ", "fragments"),
    [
        (
            "dev:\n    issue: ok\n    listen: a: b\n",
            "dev",
            {},
            ["YAML syntax error at line 3", "mapping values are not allowed"],
        ),
        ("dev:\n    <<: *common\n", "dev", {}, ["line 2", "undefined alias"]),
        ("", "dev", {}, ["should map flavor names to settings", "holds nothing"]),
        ("- dev\n- prod\n", "dev", {}, ["should map flavor names", "holds a list"]),
        (
            CLASSIC,
            "staging",
            {},
            ["no flavor 'staging' in the file", "it has: common, dev, prod, test"],
        ),
        (
            CLASSIC,
            None,
            {"SETTINGS_FLAVOR": "staging"},
            ["no flavor 'staging', named by SETTINGS_FLAVOR,"],
        ),
        ("dev: just text\n", "dev", {}, ["the flavor should map keys to values", "a string"]),
        ("dev:\n    - issue\n", "dev", {}, ["the flavor should map keys to values", "a list"]),
        (
            "prod:\n    storge_path: /x\n    colour: blue\n    workers: 2\n",
            "prod",
            {},
            [
                "key storge_path: unknown key (did you mean storage_path?)",
                "; key colour: unknown key",
            ],
        ),
        (
            "prod:\n    max_manifest_size: [1]\n    workers: 0\n    loglevel: loud\n",
            "prod",
            {},
            [
                "key max_manifest_size: Input should be a valid integer",
                "key workers: Input should be greater than or equal to 1 (got 0)",
                "key loglevel: Input should be 'debug', 'info'",
                "(got 'loud')",
            ],
        ),
        ("prod:\n    max_blob_size: 4M\n", "prod", {}, ["key max_blob_size: expected a size"]),
        ("prod:\n    max_blob_size: 1.5B\n", "prod", {}, ["not a whole number of bytes"]),
        ("prod:\n    listen: _env:LISTEN:5000\n", "prod", {}, ["key listen: expected HOST:PORT"]),
        (
            "prod:\n    database_url: _env:PORTSIDE_DB\n    issue: '_env:'\n",
            "prod",
            {},
            ["key issue: '_env:' names no environment variable"],
        ),
    ],
)
def test_config_errors_name_file_flavor_and_key(
    tmp_path: Path,
    text: str,
    flavor: str | None,
    environ: dict[str, str],
    fragments: list[str],
) -> None:
    path = write(tmp_path, text)

    message = config_error(config_file=path, flavor=flavor, environ=environ)

    assert message.startswith(f"config {path}, flavor {flavor or environ['SETTINGS_FLAVOR']}: ")
    for fragment in fragments:
        assert fragment in message


def test_config_error_for_a_missing_file_says_where_the_path_came_from(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"

    by_argument = config_error(config_file=missing, environ={})
    by_env = config_error(environ={"DOCKER_REGISTRY_CONFIG": str(missing)})

    assert by_argument == f"config {missing}, flavor dev: cannot read the file: " + (
        "No such file or directory"
    )
    assert "cannot read the file named by DOCKER_REGISTRY_CONFIG" in by_env


def test_config_error_marks_bad_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "dev:\n    listen: 127.0.0.1:5000\n")

    message = config_error(config_file=path, environ={}, overrides={"listen": "x", "lisen": 1})

    assert "key lisen (from overrides): unknown key (did you mean listen?)" in message
    assert "key listen (from overrides): expected HOST:PORT, got 'x'" in message


class _WithSecrets(Settings):
    s3_secret_key: str | None = None
    api_token: str | None = None
    ldap_password: str = ""


def test_config_error_does_not_show_secret_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "Settings", _WithSecrets)
    path = write(tmp_path, "dev:\n    s3_secret_key: [hunter2]\n    workers: x://u:pw@h\n")

    message = config_error(config_file=path, environ={})

    assert "key s3_secret_key: Input should be a valid string" in message
    assert "key workers: Input should be a valid integer" in message
    assert "(got 'x://u:***@h')" in message
    assert "hunter2" not in message
    assert "pw" not in message


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            Settings(database_url="postgresql://u:pw@db.example/meta"),
            {"database_url": "postgresql://u:***@db.example/meta"},
        ),
        (
            Settings(database_url="postgresql+psycopg://u:p%40ss@db:5432/meta?sslmode=require"),
            {"database_url": "postgresql+psycopg://u:***@db:5432/meta?sslmode=require"},
        ),
        (
            Settings(database_url="postgresql://u@db/meta"),
            {"database_url": "postgresql://u@db/meta"},
        ),
        (
            _WithSecrets(s3_secret_key="abc", api_token="t0k"),
            {"s3_secret_key": "***", "api_token": "***", "ldap_password": ""},
        ),
        (_WithSecrets(ldap_password="hunter2"), {"s3_secret_key": None, "ldap_password": "***"}),
    ],
)
def test_describe_masks_secrets(settings: Settings, expected: dict[str, object]) -> None:
    described = yaml.safe_load(describe(settings))

    assert described == settings.model_dump(mode="json") | expected
    assert list(described) == list(type(settings).model_fields)


def test_describe_output_loads_back_as_a_flavor(tmp_path: Path) -> None:
    settings = load_settings(flavor="prod", environ={"STORAGE_PATH": "/srv/registry"})
    path = write(tmp_path, "prod:\n" + textwrap.indent(describe(settings), "    "))

    assert load_settings(path, "prod", environ={}) == settings


def sample_comment_before(lines: list[str], key: str) -> str:
    """The comment lines right above the first `key:` line, joined into one sentence."""
    index = next(i for i, line in enumerate(lines) if re.match(rf"\s+{key}:", line))
    comment: list[str] = []
    while lines[index - 1].lstrip().startswith("#"):
        index -= 1
        comment.insert(0, lines[index].strip().removeprefix("#").strip())
    return " ".join(comment)


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_sample_documents_every_key_with_its_description(field: str) -> None:
    sample = sample_config()
    common = yaml.safe_load(sample)["common"]

    assert field in common
    assert (
        sample_comment_before(sample.splitlines(), field)
        == Settings.model_fields[field].description
    )


@pytest.mark.parametrize("flavor", ["common", "dev", "prod", "test"])
def test_sample_loads_in_each_flavor(tmp_path: Path, flavor: str) -> None:
    path = write(tmp_path, sample_config())

    assert set(yaml.safe_load(sample_config())) == {"common", "dev", "prod", "test"}
    assert isinstance(load_settings(path, flavor, environ={}), Settings)


S3_BASE = "storage: s3\n    s3_bucket: images\n    database_url: sqlite:////srv/registry.db"


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ("storage: s3\n    database_url: sqlite:////srv/r.db", "storage: s3 needs s3_bucket"),
        ("storage: s3\n    s3_bucket: images", "storage: s3 needs database_url"),
        ("storage_redirect: true", "storage_redirect needs storage: s3"),
        (f"{S3_BASE}\n    boto_host: h\n    s3_endpoint_url: http://h", "not both"),
        (f"{S3_BASE}\n    boto_port: 7480", "boto_port needs boto_host"),
        (f"{S3_BASE}\n    s3_part_size: 4MiB", "greater than or equal to 5242880"),
        ("storage: gcs", "Portside stores blobs with: local, s3"),
        ("storage: floppy", "Input should be 'local' or 's3'"),
    ],
)
def test_s3_settings_are_checked(tmp_path: Path, lines: str, fragment: str) -> None:
    assert fragment in config_error(config_file=one_flavor(tmp_path, lines), environ={})


@pytest.mark.parametrize(
    ("lines", "endpoint"),
    [
        ("", None),
        ("s3_endpoint_url: http://127.0.0.1:7480", "http://127.0.0.1:7480"),
        ("boto_host: rgw.internal", "https://rgw.internal"),
        ("boto_host: rgw.internal\n    s3_secure: false", "http://rgw.internal"),
        ("boto_host: rgw.internal\n    boto_port: 7480", "https://rgw.internal:7480"),
        ("boto_host: '::1'\n    boto_port: 7480\n    s3_secure: false", "http://[::1]:7480"),
    ],
)
def test_s3_endpoint_from_the_classic_keys(
    tmp_path: Path, lines: str, endpoint: str | None
) -> None:
    settings = load_settings(one_flavor(tmp_path, f"{S3_BASE}\n    {lines}"), environ={})

    assert (settings.storage, settings.s3_endpoint) == ("s3", endpoint)
