"""``access_log``: one line per request with the fields operators need, and no secrets."""

from __future__ import annotations

from structlog.testing import capture_logs

from tests.upstreams import Upstream


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


async def test_one_line_per_request_with_its_fields(serve_app, start_gateway):
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    with capture_logs() as logs:
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


async def test_errors_are_logged_with_their_reason(serve_app, start_gateway):
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    with capture_logs() as logs:
        async with gateway.request("GET", "/slow-head") as response:
            assert response.status == 504
    (line,) = requests_logged(logs)
    assert line["status"] == 504 and line["upstream_status"] is None
    assert "did not answer in time" in line["error"]


async def test_client_address_through_trusted_hops(serve_app, start_gateway):
    url = await serve_app(Upstream().app)
    spoof = {"X-Forwarded-For": "198.51.100.7, 203.0.113.5"}
    untrusting = await start_gateway(config(url))
    trusting = await start_gateway(config(url, "trusted_hops = 1"))
    with capture_logs() as logs:
        async with untrusting.request("GET", "/a", headers=spoof):
            pass
        async with trusting.request("GET", "/b", headers=spoof):
            pass
    first, second = requests_logged(logs)
    assert first["client_ip"] == "127.0.0.1"  # X-Forwarded-For is not believed by default
    assert second["client_ip"] == "203.0.113.5"  # one trusted hop: the entry it appended
