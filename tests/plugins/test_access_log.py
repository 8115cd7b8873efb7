"""``access_log``: one line per request with the fields operators need, and no secrets."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from structlog.testing import capture_logs

from gateway.logs import configure_logging, flush_logs
from tests.upstreams import Upstream

Capture = Callable[[], AbstractContextManager[list[dict[str, object]]]]


def config(url: str, server: str = "") -> str:
    return f"""
pipeline = ["access_log", "auth", "upstream_proxy"]
[server]
{server}
[upstreams.up]
url = "{url}"
idle_timeout = "300ms"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


def requests_logged(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == "request"]


@pytest.fixture(params=["json output", "structlog"])
def capture(request: pytest.FixtureRequest, log_output: io.StringIO) -> Capture:
    """Collects the log entries of a block: parsed from the JSON lines the process really
    writes (the access log's direct path), or as structlog's processors get them (the path
    of the console format, and of tests that capture logs)."""
    if request.param == "structlog":
        return capture_logs

    @contextmanager
    def written() -> Iterator[list[dict[str, object]]]:
        configure_logging("debug", "json", cache=False)
        entries: list[dict[str, object]] = []
        yield entries
        flush_logs()
        entries.extend(json.loads(line) for line in log_output.getvalue().splitlines())

    return written


async def test_one_line_per_request_with_its_fields(serve_app, start_gateway, capture):
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    with capture() as logs:
        async with gateway.request(
            "POST",
            "/echo",
            data=b"12345",
            headers={"X-Request-ID": "rid-1", "Authorization": "sk-canary-secret"},
        ) as response:
            body = await response.read()
    (line,) = requests_logged(logs)
    assert line["request_id"] == "rid-1"
    assert line["method"] == "POST" and line["path"] == "/echo" and line["route"] == "all"
    assert line["status"] == 200 and line["upstream_status"] == 200
    assert line["bytes_in"] == 5 and line["bytes_out"] == len(body)
    assert line["duration_ms"] >= line["ttfb_ms"] >= 0
    assert line["upstream"] == "up" and line["client_ip"] == "127.0.0.1"
    assert "sk-canary-secret" not in repr(logs)


async def test_a_path_of_any_characters_is_logged_as_it_was_asked_for(
    serve_app, start_gateway, capture
):
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    with capture() as logs:
        async with gateway.request("GET", "/caf%C3%A9/%22q%22%5C%25s%0A") as response:
            await response.read()
    (line,) = requests_logged(logs)
    assert line["path"] == '/caf\u00e9/"q"\\%s\n'


async def test_errors_are_logged_with_their_reason(serve_app, start_gateway, capture):
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    with capture() as logs:
        async with gateway.request("GET", "/slow-head") as response:
            assert response.status == 504
    (line,) = requests_logged(logs)
    assert line["status"] == 504 and line["upstream_status"] is None
    assert "did not answer in time" in line["error"]


async def test_client_address_through_trusted_hops(serve_app, start_gateway, capture):
    url = await serve_app(Upstream().app)
    spoof = {"X-Forwarded-For": "198.51.100.7, 203.0.113.5"}
    untrusting = await start_gateway(config(url))
    trusting = await start_gateway(config(url, "trusted_hops = 1"))
    with capture() as logs:
        async with untrusting.request("GET", "/a", headers=spoof):
            pass
        async with trusting.request("GET", "/b", headers=spoof):
            pass
    first, second = requests_logged(logs)
    assert first["client_ip"] == "127.0.0.1"  # X-Forwarded-For is not believed by default
    assert second["client_ip"] == "203.0.113.5"  # one trusted hop: the entry it appended


async def test_json_lines_go_straight_to_the_output(
    serve_app, start_gateway, log_output, monkeypatch
):
    import gateway_plugins.access_log as access_log

    class Unused:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"structlog's chain used for the access log ({name})")

    monkeypatch.setattr(access_log, "logger", Unused())
    configure_logging("info", "json", cache=False)
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    async with gateway.request("GET", "/a", headers={"X-Request-ID": "rid-2"}):
        pass
    flush_logs()
    (line,) = requests_logged([json.loads(text) for text in log_output.getvalue().splitlines()])
    assert line["request_id"] == "rid-2" and line["level"] == "info"
    assert list(line) == [*access_log.FIELDS, "event", "level", "timestamp"]


@pytest.mark.parametrize(
    ("process_level", "line_level", "written"),
    [("warning", "info", False), ("warning", "warning", True), ("info", "debug", False)],
)
async def test_the_configured_levels_are_respected(
    serve_app, start_gateway, log_output, process_level, line_level, written
):
    configure_logging(process_level, "json", cache=False)
    url = await serve_app(Upstream().app)
    gateway = await start_gateway(config(url) + f'[plugins.access_log]\nlevel = "{line_level}"\n')
    async with gateway.request("GET", "/a"):
        pass
    if written:  # a warning is written at once, without waiting for the block
        (line,) = requests_logged([json.loads(text) for text in log_output.getvalue().splitlines()])
        assert line["level"] == "warning"
    else:
        flush_logs()
        assert '"request"' not in log_output.getvalue()


async def test_the_console_format_still_gets_its_line(serve_app, start_gateway, log_output):
    configure_logging("info", "console", cache=False)
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    async with gateway.request("GET", "/a", headers={"X-Request-ID": "rid-3"}):
        pass
    flush_logs()
    (line,) = [text for text in log_output.getvalue().splitlines() if "rid-3" in text]
    assert "request" in line and "request_id=rid-3" in line and "status=200" in line
