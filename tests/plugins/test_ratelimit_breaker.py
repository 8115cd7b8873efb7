"""A hung Redis (SIGSTOP) fails fast: a real gateway process and a real ``redis-server``.

After one timeout the store's circuit breaker opens: ``fail_open`` requests
then pay no Redis wait at all, ``fail_closed`` ones get an immediate 503 with
``Retry-After``; after SIGCONT the limits apply again within a second.  Each
transition is one log line and a metric.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.plugins.test_ratelimit_burst import stop
from tests.redis_server import RedisServer
from tests.test_operations import GatewayProcess
from tests.upstreams import Upstream

# Long, so that a request that waits for Redis cannot pass for one that does not.
TIMEOUT = 2.0


def config(upstream: str, redis_url: str, fail_open: bool) -> str:
    return f"""
pipeline = ["metrics", "ratelimit"]
[server]
drain_timeout = "1s"
[plugins.ratelimit]
redis_url = "{redis_url}"
redis_timeout = "{TIMEOUT}s"
fail_open = {str(fail_open).lower()}
[[plugins.ratelimit.rules]]
name = "rate"
key = "client_ip"
rate = "1000/s"
burst = 1000
routes = ["all"]
[upstreams.up]
url = "{upstream}"
[routes.metrics]
path = "/metrics"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


@pytest.fixture
async def stopped_redis(redis_server: RedisServer) -> AsyncIterator[RedisServer]:
    """The Redis server, to be SIGSTOPped by the test; always continued afterwards."""
    yield redis_server
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGCONT)


@pytest.fixture
async def gateway(tmp_path, serve_app, stopped_redis, request) -> AsyncIterator[GatewayProcess]:
    path = tmp_path / "gateway.toml"
    upstream = await serve_app(Upstream().app)
    path.write_text(config(upstream, stopped_redis.url, request.param))
    process = GatewayProcess(path)
    try:
        yield await process.start()
    finally:
        await stop(process)


async def ask(session: aiohttp.ClientSession, gateway: GatewayProcess) -> tuple[Any, float]:
    """Status, whether limits were applied (or ``Retry-After``), and the time taken."""
    began = time.monotonic()
    async with session.get(gateway.url + "/plain") as response:
        await response.read()
        if response.status == 503:
            assert (await response.json())["error"]["code"] == "service_unavailable"
            found: Any = (503, response.headers["Retry-After"])
        else:
            found = (response.status, "X-RateLimit-Limit" in response.headers)
    return found, time.monotonic() - began


async def store_series(session: aiohttp.ClientSession, gateway: GatewayProcess) -> dict[str, float]:
    async with session.get(gateway.url + "/metrics") as response:
        text = await response.text()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("gateway_ratelimit_store") and "_created" not in sample.name:
                state = sample.labels.get("state")
                values[sample.name + (f":{state}" if state else "")] = sample.value
    return values


def lines(gateway: GatewayProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in gateway.output:
        if f'"event": "{event}"' in line:
            found.append(json.loads(line))
    return found


async def recovery_time(session: aiohttp.ClientSession, gateway: GatewayProcess) -> float:
    """Seconds from now until a request is limited again (polled every 20 ms, 5 s at most)."""
    began = time.monotonic()
    for _ in range(250):
        (status, limited), _ = await ask(session, gateway)
        if status == 200 and limited is True:
            return time.monotonic() - began
        await asyncio.sleep(0.02)
    raise AssertionError("the limits never applied again")


@pytest.mark.parametrize("gateway", [True], indirect=True, ids=["fail_open"])
async def test_a_hung_redis_costs_one_timeout_then_nothing_while_it_is_down(gateway, stopped_redis):
    assert stopped_redis.process is not None
    async with aiohttp.ClientSession() as session:
        assert (await ask(session, gateway))[0] == (200, True)
        assert await store_series(session, gateway) == {
            "gateway_ratelimit_store_unavailable": 0.0,
        }
        os.kill(stopped_redis.process.pid, signal.SIGSTOP)
        (first, waited) = await ask(session, gateway)
        assert first == (200, False)  # admitted unlimited, after one timeout
        assert TIMEOUT * 0.9 < waited < TIMEOUT * 3
        while_down = [await ask(session, gateway) for _ in range(20)]
        assert {found for found, _ in while_down} == {(200, False)}
        assert max(took for _, took in while_down) < TIMEOUT / 2  # no Redis wait at all
        assert await store_series(session, gateway) == {
            "gateway_ratelimit_store_unavailable": 1.0,
            "gateway_ratelimit_store_transitions_total:open": 1.0,
        }

        os.kill(stopped_redis.process.pid, signal.SIGCONT)
        assert await recovery_time(session, gateway) < 1.0
        assert await store_series(session, gateway) == {
            "gateway_ratelimit_store_unavailable": 0.0,
            "gateway_ratelimit_store_transitions_total:open": 1.0,
            "gateway_ratelimit_store_transitions_total:closed": 1.0,
        }
    await gateway.wait_for_output('"event": "rate-limit store is back"')  # logs come in blocks
    (down,) = lines(gateway, "rate-limit store unavailable")
    (back,) = lines(gateway, "rate-limit store is back")
    assert down["level"] == "warning" and down["fail_open"] is True
    assert f"127.0.0.1:{stopped_redis.port}" in down["store"] == back["store"]


@pytest.mark.parametrize("gateway", [False], indirect=True, ids=["fail_closed"])
async def test_fail_closed_answers_503_at_once_while_redis_is_hung(gateway, stopped_redis):
    assert stopped_redis.process is not None
    async with aiohttp.ClientSession() as session:
        assert (await ask(session, gateway))[0] == (200, True)
        os.kill(stopped_redis.process.pid, signal.SIGSTOP)
        first, waited = await ask(session, gateway)
        assert first == (503, "1")
        assert waited > TIMEOUT * 0.9
        while_down = [await ask(session, gateway) for _ in range(20)]
        assert {found for found, _ in while_down} == {(503, "1")}
        assert max(took for _, took in while_down) < TIMEOUT / 2
        os.kill(stopped_redis.process.pid, signal.SIGCONT)
        assert await recovery_time(session, gateway) < 1.0
    await gateway.wait_for_output('"event": "rate-limit store is back"')
    assert len(lines(gateway, "rate-limit store unavailable")) == 1
    assert len(lines(gateway, "rate-limit store is back")) == 1
