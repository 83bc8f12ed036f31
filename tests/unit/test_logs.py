"""server/logs.py: the JSON lines (distribution's fields for requests), Go's duration format,
and the journald priority prefix of both formats."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from portside.server.logs import (
    ACCESS,
    Access,
    JournalFormatter,
    JsonFormatter,
    configure,
    go_duration,
)


def record(message: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("portside.test", level, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    made.created = 1767323045.678901  # 2026-01-02T03:04:05.678901Z
    return made


def test_a_request_line_has_distributions_fields() -> None:
    access = Access(
        "GET",
        "/v2/team/app/manifests/latest",
        ("10.0.0.7", 50312),
        "docker/27.3.1",
        200,
        1234,
        0.001109458,
        {"cache": "hit"},
    )

    line = json.loads(JsonFormatter().format(record("ignored", **{ACCESS: access})))

    assert line == {
        "level": "info",
        "msg": "response completed",
        "time": "2026-01-02T03:04:05.678901Z",
        "http.request.method": "GET",
        "http.request.uri": "/v2/team/app/manifests/latest",
        "http.request.remoteaddr": "10.0.0.7:50312",
        "http.request.useragent": "docker/27.3.1",
        "http.response.status": 200,
        "http.response.written": 1234,
        "http.response.duration": "1.109458ms",
        "portside.cache": "hit",
    }


def test_an_ipv6_client_is_bracketed_as_go_writes_it() -> None:
    access = Access("HEAD", "/v2/", ("::1", 8080), "", 401, 0, 0.0005, {})

    line = json.loads(JsonFormatter().format(record("x", **{ACCESS: access})))

    assert line["http.request.remoteaddr"] == "[::1]:8080"


def test_other_records_have_level_msg_time_logger_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("collection %s failed", logging.ERROR, exc_info=sys.exc_info())
    failed.args = ("nightly",)

    line = json.loads(JsonFormatter().format(failed))

    assert {key: line[key] for key in ("level", "msg", "time", "logger")} == {
        "level": "error",
        "msg": "collection nightly failed",
        "time": "2026-01-02T03:04:05.678901Z",
        "logger": "portside.test",
    }
    assert line["exception"].endswith("ValueError: boom")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (850e-9, "850ns"),
        (12.5e-6, "12.5µs"),
        (0.001109458, "1.109458ms"),
        (0.25, "250ms"),
        (1, "1s"),
        (2.5, "2.5s"),
        (90, "1m30s"),
        (7205.25, "2h0m5.25s"),
    ],
)
def test_durations_read_as_go_prints_them(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_under_journald_both_formats_lead_with_the_priority() -> None:
    warning = record("disk almost full", logging.WARNING)

    assert JournalFormatter("%(name)s %(message)s").format(warning).startswith("<4>portside.test")
    line = JsonFormatter(journald=True).format(warning)
    assert line.startswith("<4>{")
    assert json.loads(line[3:])["msg"] == "disk almost full"


def test_configure_json_writes_one_object_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("info", journald=False, log_format="json")
        logging.getLogger("portside.x").info("hello %s", "there")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    assert json.loads(capsys.readouterr().out)["msg"] == "hello there"
