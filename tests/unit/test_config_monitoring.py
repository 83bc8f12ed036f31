"""The `metrics` and `health` sections and `log_format`: defaults, and bad values refused with
their key and what is wrong."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from portside.config.loader import ConfigError, load_settings
from portside.config.settings import Settings


def load(tmp_path: Path, body: str) -> Settings:
    path = tmp_path / "config.yml"
    path.write_text("test:\n" + body)
    return load_settings(str(path), "test", environ={})


def test_defaults_serve_metrics_to_loopback_and_check_a_gibibyte_free(tmp_path: Path) -> None:
    settings = load_settings(None, "dev", environ={})

    assert settings.metrics.enabled
    assert settings.metrics.allow == (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    assert settings.metrics.listen is None
    assert settings.health.min_free_space == 1024**3
    assert settings.health.drain_file is None
    assert settings.log_format == "text"


def test_the_sections_take_their_documented_forms(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        "    log_format: json\n"
        "    metrics: {allow: 10.0.0.0/8, listen: '[::1]:9102'}\n"
        "    health: {drain_file: /run/portside/drain, min_free_space: 5GiB}\n",
    )

    assert settings.log_format == "json"
    metrics = settings.metrics
    assert metrics.allow == (ip_network("10.0.0.0/8"),)
    assert (metrics.listen_host, metrics.listen_port) == ("::1", 9102)
    assert settings.health.min_free_space == 5 * 1024**3


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("    log_format: xml\n", "key log_format: Input should be 'text' or 'json'"),
        ("    metrics: {allow: [10.0.0.1/8]}\n", "did you mean 10.0.0.0/8?"),
        ("    metrics: {allow: [every]}\n", "key metrics.allow: expected a network"),
        (
            "    metrics: {allow: [8]}\n",
            "expected a network such as 10.0.0.0/8 or an address, got 8",
        ),
        ("    metrics: {listen: 9102}\n", "key metrics.listen"),
        ("    metrics: {listen: 'host:99999'}\n", "expected HOST:PORT"),
        ("    metrics: {users: [prometheus]}\n", "metrics.users and metrics.groups need an auth"),
        ("    metrics: {listen: '127.0.0.1:5000'}\n", "metrics.listen must differ from listen"),
        ("    metrics: {enable: true}\n", "key metrics.enable: Extra inputs are not permitted"),
        ("    health: {min_free_space: 5G}\n", "key health.min_free_space: expected a size"),
        ("    health: {cache_seconds: -1}\n", "key health.cache_seconds"),
        ("    health: {timeout_seconds: 0}\n", "key health.timeout_seconds"),
        ("    health: {drain: /x}\n", "key health.drain: Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_refused_with_their_key(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, body)

    assert fragment in str(error.value)
