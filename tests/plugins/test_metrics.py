"""``metrics``: counts and timings per route, served at /metrics, with no secret in them.

The registry is shared by the whole test process, so every test compares values
before and after what it does rather than absolute numbers.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from gateway.api import ProxyConnectError
from gateway.config import parse_config
from gateway.errors import (
    BadGateway,
    ConfigError,
    GatewayTimeout,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.plugin import Exchange, Plugin
from gateway.registry import installed_plugins
from gateway.runtime import build_runtime, load_runtime
from gateway.server import Service, make_socket
from gateway_plugins.metrics.plugin import MAX_RULE_LABELS, Metrics, upstream_error_kind
from gateway_plugins.metrics.registry import gateway_metrics
from tests.proxies import free_port
from tests.upstreams import Upstream

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def config(url: str, extra: str = "") -> str:
    return f"""
pipeline = ["access_log", "metrics", "auth", "upstream_proxy"]
[upstreams.up]
url = "{url}"
idle_timeout = "300ms"
[upstreams.down]
url = "http://127.0.0.1:{free_port()}"
[routes.metrics]
methods = ["GET"]
path = "/metrics"
skip = ["auth", "upstream_proxy"]
[routes.api]
methods = ["GET", "POST"]
path = "/api/{{rest*}}"
upstream = "up"
upstream_path = "/{{rest}}"
[routes.stream]
methods = ["GET"]
path = "/stream"
upstream = "up"
upstream_path = "/sse"
idle_timeout = "10s"
[routes.down]
path = "/down"
upstream = "down"
[routes.private]
path = "/private/{{rest*}}"
upstream = "up"
upstream_path = "/{{rest}}"
[routes.private.plugins.auth]
require_credential = true
{extra}
"""


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """The sum of every series of ``name``."""
    return sum(v for (sample, _), v in samples.items() if sample == name)


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        return parse(await response.text())


async def scrape_until(
    session: aiohttp.ClientSession, url: str, done: Callable[[Samples], bool]
) -> Samples:
    """Scrape until ``done`` holds (``on_complete`` may run just after the client's last byte)."""
    for _ in range(200):
        samples = await scrape(session, url)
        if done(samples):
            break
        await asyncio.sleep(0.01)
    return samples


def requests(samples: Samples, route: str, method: str, status: int) -> float:
    return value(samples, "gateway_requests_total", route=route, method=method, status=str(status))


async def test_requests_by_route_method_and_status_with_timings_and_bytes(serve_app, start_gateway):
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    session, url = gateway.session, gateway.url
    before = await scrape(session, url)
    async with gateway.request("POST", "/api/echo", data=b"12345") as response:
        assert response.status == 200
        body = await response.read()
    async with gateway.request("DELETE", "/api/echo") as response:
        assert response.status == 405
    async with gateway.request("GET", "/private/echo") as response:
        assert response.status == 401  # auth short-circuits: no credential
    async with gateway.request("GET", "/down") as response:
        assert response.status == 502
    async with gateway.request("GET", "/api/slow-head") as response:
        assert response.status == 504

    after = await scrape_until(
        session,
        url,
        lambda s: requests(s, "api", "POST", 200) > requests(before, "api", "POST", 200),
    )

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert requests(after, "api", "POST", 200) - requests(before, "api", "POST", 200) == 1
    assert requests(after, "api", "DELETE", 405) - requests(before, "api", "DELETE", 405) == 1
    assert requests(after, "private", "GET", 401) - requests(before, "private", "GET", 401) == 1
    assert requests(after, "down", "GET", 502) - requests(before, "down", "GET", 502) == 1
    assert requests(after, "api", "GET", 504) - requests(before, "api", "GET", 504) == 1
    assert requests(after, "metrics", "GET", 200) > requests(before, "metrics", "GET", 200)
    # Upstream failures by kind.
    errors = "gateway_upstream_errors_total"
    assert delta(errors, route="down", upstream="down", kind="connect") == 1
    assert delta(errors, route="api", upstream="up", kind="timeout") == 1
    # Histograms: every api request timed; only the one upstream answer has a head and a body.
    assert delta("gateway_request_duration_seconds_count", route="api") == 3
    assert delta("gateway_request_duration_seconds_sum", route="api") > 0
    up = {"route": "api", "upstream": "up"}
    assert delta("gateway_upstream_latency_seconds_count", **up) == 1
    assert delta("gateway_time_to_first_byte_seconds_count", **up) == 1
    assert delta("gateway_upstream_latency_seconds_bucket", **up, le="+Inf") == 1
    # Buckets fit LLM traffic: from 5 ms to five minutes.
    for le in ("0.005", "300.0"):
        bucket = frozenset({**up, "le": le}.items())
        assert ("gateway_upstream_latency_seconds_bucket", bucket) in after
    # Every route's series exist from the start; a route without upstream has no upstream series.
    assert ("gateway_open_streams", frozenset({("route", "down")})) in before
    no_upstream = [dict(labels) for _, labels in after if ("route", "metrics") in labels]
    assert no_upstream and not any("upstream" in labels for labels in no_upstream)
    assert delta("gateway_request_bytes_total", route="api") == 5
    assert delta("gateway_response_bytes_total", route="api") == len(body)


async def test_open_streams_while_an_event_stream_flows(serve_app, start_gateway):
    upstream = Upstream()
    gateway = await start_gateway(config(await serve_app(upstream.app)))
    session, url = gateway.session, gateway.url
    gauge = "gateway_open_streams"
    before = value(await scrape(session, url), gauge, route="stream")
    async with gateway.request("GET", "/stream") as response:
        assert await response.content.readuntil(b"\n\n") == b"data: first\n\n"
        during = await scrape(session, url)
        assert value(during, gauge, route="stream") == before + 1
        upstream.gate.set()
        assert await response.read() == b"data: second\n\ndata: [DONE]\n\n"
    after = await scrape_until(session, url, lambda s: value(s, gauge, route="stream") == before)
    assert value(after, gauge, route="stream") == before
    ttfb = "gateway_time_to_first_byte_seconds_count"
    assert value(after, ttfb, route="stream", upstream="up") > value(
        during, ttfb, route="stream", upstream="up"
    )


async def test_aborted_streams_and_client_disconnects(serve_app, start_gateway):
    upstream = Upstream()
    gateway = await start_gateway(config(await serve_app(upstream.app)))
    session, url = gateway.session, gateway.url
    errors, gone = "gateway_upstream_errors_total", "gateway_client_disconnects_total"
    before = await scrape(session, url)
    async with gateway.request("GET", "/api/die") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()  # the gateway aborts the client: no clean end
    async with gateway.request("GET", "/api/heartbeat") as response:
        await response.content.readuntil(b"\n\n")
        response.close()  # the client goes away mid-stream
    await asyncio.wait_for(upstream.disconnected.wait(), 5)

    def settled(s: Samples) -> bool:
        return value(s, gone, route="api") > value(before, gone, route="api")

    after = await scrape_until(session, url, settled)
    aborted = {"route": "api", "upstream": "up", "kind": "aborted"}
    assert value(after, errors, **aborted) - value(before, errors, **aborted) == 1
    assert value(after, gone, route="api") - value(before, gone, route="api") == 1
    streams = "gateway_open_streams"
    assert value(after, streams, route="api") == value(before, streams, route="api")


async def test_no_secret_path_query_or_method_becomes_a_label(serve_app, start_gateway):
    gateway = await start_gateway(config(await serve_app(Upstream().app)))
    session, url = gateway.session, gateway.url
    secret = {"Authorization": "Bearer sk-canary-XYZ"}
    before = await scrape(session, url)
    async with gateway.request("GET", "/api/canary-path?key=canary", headers=secret) as response:
        assert response.status == 200
        await response.read()
    async with gateway.request("POST", "/private/canary-path?key=canary", headers=secret) as r:
        assert r.status == 200
        await r.read()
    async with gateway.request("GET", "/canary-path?key=canary", headers=secret) as response:
        assert response.status == 404  # no route: answered before any plugin runs
    async with gateway.request("PROPFIND", "/api/canary-path", headers=secret) as response:
        assert response.status == 405

    def settled(s: Samples) -> bool:
        return requests(s, "private", "POST", 200) > requests(before, "private", "POST", 200)

    await scrape_until(session, url, settled)
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    assert "canary" not in text.lower()
    after = parse(text)
    assert requests(after, "api", "GET", 200) - requests(before, "api", "GET", 200) == 1
    assert requests(after, "api", "OTHER", 405) - requests(before, "api", "OTHER", 405) == 1


class FakeRateLimit(Plugin):
    """Stands in for ``ratelimit``: replaces an upstream answer with its own error.

    (What the real plugins report to ``metrics`` is tested with the real plugins
    together, in ``test_metrics_together.py``.)
    """

    @attrs.frozen
    class Config:
        rules: tuple[Mapping[str, Any], ...] = ()

    async def on_response(self, ex: Exchange) -> None:
        if "X-Replace" in ex.request.headers:
            raise BadGateway("a plugin's own answer instead of the upstream's")


@pytest.fixture
async def fake_gateway(serve_app) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A gateway whose ``ratelimit`` is `FakeRateLimit`, with one rule named ``per_user``."""
    text = config(
        await serve_app(Upstream().app),
        '[[plugins.ratelimit.rules]]\nname = "per_user"\nrate = "1/s"',
    ).replace('"metrics", "auth"', '"metrics", "auth", "ratelimit"')
    fake = importlib.metadata.EntryPoint(
        name="ratelimit", value=f"{__name__}:FakeRateLimit", group="gateway.plugins"
    )
    runtime = build_runtime(
        parse_config(text, "test.toml", env={}),
        installed={**installed_plugins(), "ratelimit": fake},
    )
    service = await Service.create(runtime)
    await service.start(make_socket("127.0.0.1", 0))
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{service.port}"
    await service.stop(1)


def test_rule_labels_stay_few_whatever_a_plugin_reports():
    metrics = Metrics(Metrics.Config())
    labels = [metrics._rule_label(Limited(f"rule-{i}")) for i in range(MAX_RULE_LABELS + 5)]
    assert labels[:MAX_RULE_LABELS] == [f"rule-{i}" for i in range(MAX_RULE_LABELS)]
    assert labels[MAX_RULE_LABELS:] == ["other"] * 5
    assert metrics._rule_label(Limited("rule-0")) == "rule-0"  # known names keep their label


@attrs.frozen
class Limited:
    limited_by: str


async def test_an_answer_a_plugin_replaced_is_no_stream_and_no_upstream_error(fake_gateway):
    session, url = fake_gateway
    before = await scrape(session, url)
    async with session.get(url + "/api/echo", headers={"X-Replace": "1"}) as response:
        assert response.status == 502
        await response.read()
    after = await scrape_until(
        session,
        url,
        lambda s: requests(s, "api", "GET", 502) > requests(before, "api", "GET", 502),
    )
    assert requests(after, "api", "GET", 502) - requests(before, "api", "GET", 502) == 1
    errors = "gateway_upstream_errors_total"
    assert total(after, errors) == total(before, errors)
    assert value(after, "gateway_open_streams", route="api") == value(
        before, "gateway_open_streams", route="api"
    )


async def test_counters_continue_across_reload_and_per_route_instances(serve_app, start_gateway):
    url_up = await serve_app(Upstream().app)
    # The api route configures its own instance (which serves nothing), a second one.
    text = config(url_up, '[routes.api.plugins.metrics]\npath = ""')
    gateway = await start_gateway(text)
    session, url = gateway.session, gateway.url
    instances = {id(p) for p in gateway.service.runtime.plugins if isinstance(p, Metrics)}
    assert len(instances) == 2
    before = await scrape(session, url)
    async with gateway.request("GET", "/api/echo") as response:
        await response.read()
    await gateway.service.reload(load_runtime(text, "test.toml", os.environ))
    async with gateway.request("GET", "/api/echo") as response:
        await response.read()

    def settled(s: Samples) -> bool:
        return requests(s, "api", "GET", 200) - requests(before, "api", "GET", 200) >= 2

    after = await scrape_until(session, url, settled)
    assert requests(after, "api", "GET", 200) - requests(before, "api", "GET", 200) == 2


def test_every_instance_shares_one_registry():
    first, second = Metrics(Metrics.Config()), Metrics(Metrics.Config(path=""))
    assert first.metrics is second.metrics is gateway_metrics()
    assert first.uses("on_request") and not second.uses("on_request")
    assert first.uses("on_complete") and not first.uses("on_chunk")


def test_path_must_be_absolute():
    with pytest.raises(ConfigError) as caught:
        load_runtime('pipeline = ["metrics"]\n[plugins.metrics]\npath = "metrics"', "t.toml", {})
    assert 'path: must start with "/"' in str(caught.value)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UpstreamTimeout("no head", kind="timeout"), "timeout"),
        (UpstreamError("cannot connect", kind="connect"), "connect"),
        (ProxyConnectError("proxy down"), "proxy"),
        (UpstreamTimeout("went idle mid-response", kind="idle_timeout"), "idle_timeout"),
        (UpstreamError("broke off mid-response", kind="aborted"), "aborted"),
        (BadGateway("a plugin's own answer"), None),
        (GatewayTimeout("a plugin's own timeout"), None),
        (Unauthorized("no"), None),
        (ValueError("bug"), None),
    ],
)
def test_upstream_error_kinds(error: BaseException, kind: str | None):
    assert upstream_error_kind(error) == kind


def test_workers_sum_in_multiprocess_mode(tmp_path: Path):
    """With PROMETHEUS_MULTIPROC_DIR, a scrape in any process sums every process's counts."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = Path(__file__).parents[2]
    count = (
        "from gateway_plugins.metrics.registry import gateway_metrics\n"
        "metrics = gateway_metrics()\n"
        "metrics.count(metrics.requests, ('mp', 'GET', 200))\n"
        "metrics.fold()\n"
    )
    show = (
        "import sys\nfrom gateway_plugins.metrics.registry import gateway_metrics\n"
        "sys.stdout.write(gateway_metrics().exposition().decode())\n"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, cwd=root, check=True)
    shown = subprocess.run(
        [sys.executable, "-c", show], env=env, cwd=root, check=True, capture_output=True, text=True
    ).stdout
    assert requests(parse(shown), "mp", "GET", 200) == 2
    assert "process_cpu_seconds_total" not in shown
