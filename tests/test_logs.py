"""``gateway.logs``: the direct JSON lines are the lines structlog would write."""

from __future__ import annotations

import datetime
import io
import json
import re
import time
from types import SimpleNamespace

import pytest
import structlog
from structlog.testing import capture_logs

from gateway import logs
from gateway.logs import (
    configure_logging,
    flush_logs,
    iso_utc_now,
    json_line_format,
    write_json_line,
)

FIELDS: dict[str, str | int | float | None] = {
    "request_id": "rid-1",
    "path": '/caf\u00e9/"quoted"\\\n',
    "status": 200,
    "upstream_status": None,
    "duration_ms": 12.34,
    "proxy": "socks5://u:***@127.0.0.1:1080",
    "ratio": 0.5,
    "cached": True,
    "100%": "%s %d %%",
}


def write(level: str, event: str, fields: dict[str, object]) -> bool:
    """`write_json_line` for these fields, each written as JSON by ``json.dumps``."""
    line_format = json_line_format(list(fields), event, level)
    return write_json_line(level, line_format, tuple(json.dumps(v) for v in fields.values()))


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


def lines(stream: io.StringIO) -> list[str]:
    flush_logs()
    return stream.getvalue().splitlines()


def stamped(line: str) -> str:
    """The line with its timestamp (checked) replaced by a fixed one."""
    entry = json.loads(line)
    assert ISO.fullmatch(entry["timestamp"])
    return line.replace(entry["timestamp"], "T")


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_the_line_is_the_one_structlog_writes(log_output, level):
    configure_logging("debug", "json", cache=False)
    getattr(structlog.get_logger("t"), level)("request", **FIELDS)
    assert write(level, "request", FIELDS)
    through_structlog, direct = lines(log_output)
    assert stamped(direct) == stamped(through_structlog)  # same keys, order, values, spacing
    assert list(json.loads(direct)) == [*FIELDS, "event", "level", "timestamp"]


async def test_lines_keep_their_order_and_warnings_go_out_at_once(log_output):
    configure_logging("info", "json", cache=False)
    log = structlog.get_logger("t")
    log.info("first")
    assert write("info", "second", {})
    log.info("third")
    assert log_output.getvalue() == ""  # info lines wait for the block
    assert write("warning", "fourth", {"n": 4})
    assert [json.loads(line)["event"] for line in log_output.getvalue().splitlines()] == [
        "first",
        "second",
        "third",
        "fourth",
    ]


def test_levels_below_the_configured_one_are_not_written(log_output):
    configure_logging("warning", "json", cache=False)
    assert write("info", "request", FIELDS)  # handled: filtered out
    assert write("debug", "request", FIELDS)
    assert lines(log_output) == []
    assert write("warning", "request", FIELDS)
    assert len(lines(log_output)) == 1


def test_other_set_ups_are_left_to_structlog(log_output):
    assert not write("info", "request", FIELDS)  # not configured yet
    configure_logging("info", "console", cache=False)
    assert not write("info", "request", FIELDS)
    configure_logging("info", "json", cache=False)
    with capture_logs() as captured:
        assert not write("info", "request", FIELDS)
    assert captured == []
    assert write("info", "request", FIELDS)  # capture over: direct again
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    assert not write("info", "request", FIELDS)
    assert len(lines(log_output)) == 1


@pytest.mark.parametrize("key", ["event", "level", "timestamp"])
def test_a_field_cannot_take_the_name_of_the_lines_own_keys(key):
    with pytest.raises(ValueError, match="own keys"):
        json_line_format(["status", key], "request", "info")


@pytest.mark.parametrize(
    "instant",
    [
        datetime.datetime(2026, 11, 26, 9, 58, 3, 548024),
        datetime.datetime(2026, 11, 26, 9, 58, 3, 548025),  # same second: the cached prefix
        datetime.datetime(2026, 11, 26, 9, 58, 4, 1),
        datetime.datetime(2026, 11, 26, 9, 58, 4, 0),  # isoformat leaves out 0 microseconds
        datetime.datetime(2026, 12, 31, 23, 59, 59, 999999),
        datetime.datetime(2027, 1, 1, 0, 0, 0, 10),
    ],
)
def test_timestamps_are_written_as_structlog_writes_them(monkeypatch, instant):
    instant = instant.replace(tzinfo=datetime.UTC)
    since_epoch = instant - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    nanoseconds = (since_epoch // datetime.timedelta(microseconds=1)) * 1000 + 999
    fake_time = SimpleNamespace(
        time_ns=lambda: nanoseconds, strftime=time.strftime, gmtime=time.gmtime
    )
    monkeypatch.setattr(logs, "time", fake_time)
    # What TimeStamper(fmt="iso", utc=True) does with datetime.now(tz=timezone.utc):
    assert iso_utc_now() == instant.isoformat().replace("+00:00", "Z")


def test_the_timestamp_is_now():
    before = datetime.datetime.now(tz=datetime.UTC)
    stamp = iso_utc_now()
    after = datetime.datetime.now(tz=datetime.UTC)
    assert ISO.fullmatch(stamp)
    assert before <= datetime.datetime.fromisoformat(stamp) <= after
