"""The `mirroring` section: the classic keys, upstreams by prefix, and every key given wrong."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from portside.config.mirroring import ROOT, MirroringSettings, UpstreamSettings


def test_the_classic_keys_make_the_root_upstream() -> None:
    section = MirroringSettings.model_validate(
        {"source": "https://Registry-1.Docker.io/", "tags_cache_ttl": 172800}
    )

    upstreams = section.all_upstreams()

    assert section.enabled
    assert upstreams[ROOT].url == "https://registry-1.docker.io"
    assert upstreams[ROOT].merged
    assert section.tags_cache_ttl == timedelta(days=2)


def test_nothing_set_is_no_cache() -> None:
    section = MirroringSettings.model_validate(
        {"source": None, "source_index": None, "tags_cache_ttl": 172800}
    )
    assert not section.enabled
    assert section.all_upstreams() == {}


def test_docker_hub_is_known_by_its_registry_name_for_ns() -> None:
    hub = UpstreamSettings(url="https://registry-1.docker.io")
    other = UpstreamSettings(url="http://127.0.0.1:5001", names=["Mirror.Example"])

    assert hub.serves("docker.io")
    assert hub.serves("registry-1.docker.io")
    assert other.serves("127.0.0.1:5001")
    assert other.serves("mirror.example")
    assert not other.serves("docker.io")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"source": "registry-1.docker.io"}, "expected a URL such as"),
        ({"source": "ftp://registry-1.docker.io"}, "expected a URL such as"),
        ({"source": "https://r.example/v2/"}, "expected only a scheme, a host and a port"),
        ({"source": "https://user:pw@r.example"}, "expected only a scheme, a host and a port"),
        ({"source": "https://r.example:99999"}, "bad port"),
        ({"source": "https://r.example\x00"}, "a control character"),
        ({"source": "https://r.exa mple"}, "a control character"),
        ({"source": "https://r.ex\udc80"}, "a control character"),
        ({"source": "https://r.example", "source_username": "u"}, "go together"),
        ({"upstreams": {"hub/x": {"url": "https://r.example"}}}, "one lower-case path"),
        ({"upstreams": {"Hub": {"url": "https://r.example"}}}, "one lower-case path"),
        ({"upstreams": {"h\udc80b": {"url": "https://r.example"}}}, "one lower-case path"),
        ({"upstreams": {"hub": {}}}, "url"),
        ({"upstreams": {"hub": {"url": "https://r.example", "password": "p"}}}, "go together"),
        ({"upstreams": {"hub": {"url": "https://r.example", "bogus": 1}}}, "bogus"),
        ({"tags_cache_ttl": "soon"}, "expected a duration"),
        ({"tags_cache_ttl": True}, "expected a duration"),
        ({"failure_threshold": 0}, "greater than or equal to 1"),
        ({"keep_unpulled": "x" * 10_000}, "expected a duration"),
    ],
)
def test_a_section_given_wrong_is_refused_naming_what(
    section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        MirroringSettings.model_validate(section)
    assert message in str(raised.value)
