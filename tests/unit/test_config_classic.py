"""The classic docker-registry's config_sample.yml, unchanged, and every classic key: honoured,
or accepted with one warning saying why Portside does not need it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from portside.cli import main
from portside.config.loader import ConfigError, load_settings
from portside.config.settings import Settings

SAMPLE = Path(__file__).parents[1] / "data" / "classic" / "config_sample.yml"
# As the classic guide says: copy the sample, add a flavor that inherits one of its own.
CUSTOM = "\ncustom:\n    <<: *local\n    loglevel: info\n"
S3_ENV = {"AWS_BUCKET": "images", "AWS_HOST": "rgw.internal", "AWS_PORT": "7480"}
LOCAL_FLAVORS = ["local", "dev", "test", "custom"]
S3_FLAVORS = ["s3", "ceph-s3", "prod"]
MISSING_DRIVERS = [
    "gcs",
    "swift",
    "glance",
    "openstack",
    "glance-swift",
    "openstack-swift",
    "elliptics",
    "oss",
    "azureblob",
]


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(SAMPLE.read_text() + CUSTOM)
    return path


def one_flavor(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flavor.yml"
    path.write_text("dev:\n" + textwrap.indent(textwrap.dedent(text), "    "))
    return path


def settings_and_warnings(
    tmp_path: Path, text: str, environ: dict[str, str] | None = None
) -> tuple[Settings, list[str]]:
    warnings: list[str] = []
    settings = load_settings(one_flavor(tmp_path, text), environ=environ or {}, warnings=warnings)
    return settings, warnings


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(one_flavor(tmp_path, text), environ={})
    return str(raised.value)


# The sample, flavor by flavor -----------------------------------------------------------------


@pytest.mark.parametrize("flavor", LOCAL_FLAVORS)
def test_local_flavors_load_without_a_warning(sample: Path, flavor: str) -> None:
    warnings: list[str] = []
    settings = load_settings(sample, flavor, environ={}, warnings=warnings)

    assert warnings == []
    assert settings.storage == "local"
    # The classic search index's database holds the metadata.
    assert settings.metadata_url == "sqlite:////tmp/docker-registry.db"
    assert settings.mirroring is not None
    assert not settings.mirroring.enabled
    assert settings.cors is not None
    assert not settings.cors.enabled
    assert settings.cors.headers == ("Content-Type",)  # `_env:CORS_HEADERS:[Content-Type]`
    assert settings.email_exceptions is not None
    assert not settings.email_exceptions.enabled
    assert settings.email_exceptions.smtp_port == 25
    assert settings.mirroring.tags_cache_ttl.total_seconds() == 172800


def test_flavors_keep_the_classic_values(sample: Path) -> None:
    dev = load_settings(sample, "dev", environ={})
    local = load_settings(sample, "local", environ={})
    test = load_settings(sample, "test", environ={})
    custom = load_settings(sample, "custom", environ={})

    assert (dev.loglevel, dev.debug, dev.search_backend) == ("debug", True, "sqlalchemy")
    # `search_backend: _env:SEARCH_BACKEND` with nothing set: no search backend.
    assert (local.loglevel, local.search_backend) == ("info", "")
    assert local.storage_path == Path("/tmp/registry")
    assert test.storage_path == Path("./tmp/test")
    assert (custom.loglevel, custom.storage_path) == ("info", Path("/tmp/registry"))


def test_environment_overrides_the_sample(sample: Path) -> None:
    environ = {
        "STORAGE_PATH": "/srv/registry",
        "SEARCH_BACKEND": "sqlalchemy",
        "SQLALCHEMY_INDEX_DATABASE": "sqlite:////srv/index.db",
        "CORS_ORIGINS": "[https://ui.example.com, 'https://.*\\.example\\.org']",
        "CORS_METHODS": "GET, HEAD",
        "CORS_SUPPORTS_CREDENTIALS": "true",
        "CORS_MAX_AGE": "600",
        "SMTP_HOST": "mail.example.com",
        "SMTP_SECURE": "true",
        "MIRROR_SOURCE": "https://registry-1.docker.io",
        "MIRROR_TAGS_CACHE_TTL": "3600",
    }

    settings = load_settings(sample, "local", environ=environ)

    assert settings.storage_path == Path("/srv/registry")
    assert settings.search_backend == "sqlalchemy"
    assert settings.metadata_url == "sqlite:////srv/index.db"
    assert settings.cors is not None
    assert settings.cors.enabled
    assert settings.cors.origins == ("https://ui.example.com", "https://.*\\.example\\.org")
    assert settings.cors.methods == ("GET", "HEAD")
    assert (settings.cors.supports_credentials, settings.cors.max_age) == (True, 600)
    assert settings.email_exceptions is not None
    assert settings.email_exceptions.enabled
    assert settings.email_exceptions.smtp_secure is True
    assert settings.email_exceptions.to_addr == ("noise+dockerregistry@localdomain.local",)
    assert settings.mirroring is not None
    assert settings.mirroring.enabled
    assert settings.mirroring.tags_cache_ttl.total_seconds() == 3600


@pytest.mark.parametrize("flavor", S3_FLAVORS)
def test_s3_flavors_load_with_the_bucket_from_the_environment(sample: Path, flavor: str) -> None:
    warnings: list[str] = []
    settings = load_settings(sample, flavor, environ=S3_ENV, warnings=warnings)

    assert warnings == []
    assert (settings.storage, settings.s3_bucket) == ("s3", "images")
    assert settings.s3_endpoint == (
        "http://rgw.internal:7480" if flavor == "ceph-s3" else "https://rgw.internal:7480"
    )
    assert settings.s3_encrypt is (flavor != "ceph-s3")  # AWS_ENCRYPT defaults differ
    assert settings.metadata_url == "sqlite:////tmp/docker-registry.db"
    assert settings.search_backend == ""


def test_s3_flavor_without_a_bucket_says_so(sample: Path) -> None:
    with pytest.raises(ConfigError, match="storage: s3 needs s3_bucket"):
        load_settings(sample, "prod", environ={})


@pytest.mark.parametrize("flavor", MISSING_DRIVERS)
def test_flavors_of_missing_drivers_fail_only_when_selected(sample: Path, flavor: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(sample, flavor, environ={})

    assert "Portside stores blobs with: local, s3" in str(raised.value)
    assert "unknown key" not in str(raised.value)  # one line, not one per driver key


@pytest.mark.parametrize("flavor", ["dev", "custom", "ceph-s3"])
def test_config_check_exits_0_with_the_two_variables_only(sample: Path, flavor: str) -> None:
    env = {"DOCKER_REGISTRY_CONFIG": str(sample), "SETTINGS_FLAVOR": flavor, **S3_ENV}

    result = CliRunner().invoke(main, ["config", "check"], env=env)

    assert result.exit_code == 0, result.output
    assert "storage: " in result.stdout


def test_config_check_prints_warnings_on_stderr(sample: Path) -> None:
    env = {"DOCKER_REGISTRY_CONFIG": str(sample), "SETTINGS_FLAVOR": "dev", "BUGSNAG": "k3y"}

    result = CliRunner().invoke(main, ["config", "check"], env=env)

    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: ") == 1
    assert "warning: bugsnag is ignored" in result.stderr
    assert "bugsnag" not in result.stdout


# `_env:` values, as the classic registry read them --------------------------------------------


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("_env:CORS_HEADERS:[Content-Type]", {}, ("Content-Type",)),
        (
            "_env:CORS_HEADERS",
            {"CORS_HEADERS": "[Content-Type, X-Custom]"},
            ("Content-Type", "X-Custom"),
        ),
        (
            "_env:CORS_HEADERS",
            {"CORS_HEADERS": "Content-Type, Authorization"},
            ("Content-Type", "Authorization"),
        ),
        ("_env:CORS_HEADERS", {}, ("*",)),  # unset, no default: null, the key's default
    ],
)
def test_env_lists(tmp_path: Path, text: str, environ: dict[str, str], expected: object) -> None:
    settings, _ = settings_and_warnings(
        tmp_path, f"cors:\n    origins: '*'\n    headers: {text}\n", environ
    )

    assert settings.cors is not None

    assert settings.cors.headers == expected


def test_a_list_where_text_is_wanted_stays_text(tmp_path: Path) -> None:
    settings, _ = settings_and_warnings(tmp_path, "issue: _env:ISSUE\n", {"ISSUE": "[a]"})

    assert settings.issue == "[a]"


# Keys Portside does without: one warning each, only when they would have done something -------


@pytest.mark.parametrize(
    ("text", "warned"),
    [
        ("standalone: false", "standalone"),
        ("standalone: false\nindex_endpoint: https://index.docker.io", "index_endpoint"),
        ("standalone: false\ndisable_token_auth: true", "disable_token_auth"),
        ("privileged_key: /etc/registry/key.pub", "privileged_key"),
        ("cache:\n    host: redis.internal\n    port: 6379", "cache"),
        ("cache_lru:\n    host: redis.internal", "cache_lru"),
        ("bugsnag: 0123abcd", "bugsnag"),
        ("boto_debug: 1", "boto_debug"),
        ("mirroring:\n    source_index: https://index.docker.io", "mirroring.source_index"),
        (
            "cloudfront:\n    base: https://d1.cloudfront.net\n    keyid: K\n    keysecret: s",
            "cloudfront",
        ),
        ("s3_use_sigv4: false", "s3_use_sigv4"),
    ],
)
def test_retired_keys_warn_once(tmp_path: Path, text: str, warned: str) -> None:
    _, warnings = settings_and_warnings(tmp_path, text + "\n")

    mine = [warning for warning in warnings if warning.startswith(f"{warned} ")]
    assert len(mine) == 1, warnings
    assert "Portside" in mine[0]
    # With standalone: false, standalone itself is the other line.
    assert len(warnings) == 1 + (warned in ("index_endpoint", "disable_token_auth")), warnings


@pytest.mark.parametrize(
    "text",
    [
        "standalone: true\nindex_endpoint: https://index.docker.io\ndisable_token_auth: true",
        "standalone: _env:STANDALONE:true",
        "index_endpoint: _env:INDEX_ENDPOINT:https://index.docker.io",
        "privileged_key: _env:PRIVILEGED_KEY",
        "cache:\n    host: _env:CACHE_REDIS_HOST\n    db: _env:CACHE_REDIS_DB:0",
        "bugsnag: _env:BUGSNAG",
        "bugsnag: null",
        "boto_debug: _env:AWS_DEBUG:0",
        "cloudfront:\n    base: null",
        "s3_use_sigv4: true",
        "storage_alternate: swift",
        "mirroring:\n    source_index: _env:MIRROR_SOURCE_INDEX",
    ],
)
def test_retired_keys_without_effect_are_silent(tmp_path: Path, text: str) -> None:
    _, warnings = settings_and_warnings(tmp_path, text + "\n")

    assert warnings == []


def test_a_typo_still_fails_with_a_suggestion(tmp_path: Path) -> None:
    assert "key storage_pth: unknown key (did you mean storage_path?)" in error(
        tmp_path, "storage_pth: /srv\n"
    )


# Aliases ----------------------------------------------------------------------------------------

S3 = "storage: s3\ndatabase_url: sqlite:////srv/r.db\n"


def test_boto_bucket_is_s3_bucket(tmp_path: Path) -> None:
    settings, _ = settings_and_warnings(tmp_path, S3 + "boto_bucket: images\n")

    assert settings.s3_bucket == "images"


def test_boto_bucket_and_s3_bucket_must_agree(tmp_path: Path) -> None:
    assert "boto_bucket: 'a' differs from s3_bucket 'b'" in error(
        tmp_path, S3 + "boto_bucket: a\ns3_bucket: b\n"
    )


def test_s3_use_sigv4_takes_only_booleans(tmp_path: Path) -> None:
    assert "key s3_use_sigv4: expected true or false" in error(tmp_path, "s3_use_sigv4: v2\n")


@pytest.mark.parametrize(
    ("value", "path_style"),
    [
        ("boto.s3.connection.OrdinaryCallingFormat", True),
        ("boto.s3.connection.ProtocolIndependentOrdinaryCallingFormat", True),
        ("boto.s3.connection.SubdomainCallingFormat", False),
        ("boto.s3.connection.VHostCallingFormat", False),
        ("SubdomainCallingFormat", False),
    ],
)
def test_boto_calling_format_is_s3_path_style(tmp_path: Path, value: str, path_style: bool) -> None:
    settings, _ = settings_and_warnings(tmp_path, f"boto_calling_format: {value}\n")

    assert settings.s3_path_style is path_style


def test_boto_calling_format_errors(tmp_path: Path) -> None:
    assert "key boto_calling_format: expected boto.s3.connection" in error(
        tmp_path, "boto_calling_format: Sideways\n"
    )
    assert "contradicts s3_path_style" in error(
        tmp_path, "boto_calling_format: OrdinaryCallingFormat\ns3_path_style: false\n"
    )


# search_backend and sqlalchemy_index_database ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("issue: x", "sqlalchemy"),  # not named: Portside's default, search on
        ("search_backend: null", ""),
        ("search_backend: ''", ""),
        ("search_backend: _env:SEARCH_BACKEND", ""),
        ("search_backend: SQLAlchemy", "sqlalchemy"),
    ],
)
def test_search_backend(tmp_path: Path, text: str, expected: str) -> None:
    settings, _ = settings_and_warnings(tmp_path, text + "\n")

    assert settings.search_backend == expected


def test_other_search_backends_are_refused(tmp_path: Path) -> None:
    assert "expected sqlalchemy (the built-in search)" in error(
        tmp_path, "search_backend: mymodule.index\n"
    )


def test_database_url_wins_over_the_search_index_database(tmp_path: Path) -> None:
    settings, _ = settings_and_warnings(
        tmp_path,
        "sqlalchemy_index_database: sqlite:////srv/index.db\ndatabase_url: sqlite:////srv/m.db\n",
    )

    assert settings.metadata_url == "sqlite:////srv/m.db"


def test_the_search_index_database_serves_s3(tmp_path: Path) -> None:
    settings, _ = settings_and_warnings(
        tmp_path, "storage: s3\ns3_bucket: b\nsqlalchemy_index_database: sqlite:////srv/i.db\n"
    )

    assert settings.metadata_url == "sqlite:////srv/i.db"


# cors and email_exceptions ------------------------------------------------------------------


def test_cors_refuses_per_resource_options(tmp_path: Path) -> None:
    assert "per-resource options are not supported" in error(
        tmp_path, "cors:\n    origins: '*'\n    resources:\n        /v2/.*: {origins: x}\n"
    )


def test_cors_refuses_bad_patterns(tmp_path: Path) -> None:
    assert "is not a regular expression" in error(tmp_path, "cors:\n    origins: 'https://(a'\n")


def test_email_needs_a_recipient_and_whole_credentials(tmp_path: Path) -> None:
    assert "smtp_host needs to_addr" in error(tmp_path, "email_exceptions:\n    smtp_host: m\n")
    assert "smtp_login and smtp_password go together" in error(
        tmp_path, "email_exceptions:\n    smtp_host: m\n    to_addr: a@b\n    smtp_login: u\n"
    )
