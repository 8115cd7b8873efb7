"""``ratelimit`` on a real Redis: the Lua scripts, limits shared by gateway processes,
quotas that outlive a gateway, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from gateway.config import structure
from gateway_plugins.ratelimit.config import Period, RuleConfig
from gateway_plugins.ratelimit.lua import CALENDAR
from gateway_plugins.ratelimit.redis_store import RedisStore
from gateway_plugins.ratelimit.rules import Rule, calendar_window
from gateway_plugins.ratelimit.store import Check, StoreUnavailable
from tests.redis_server import RedisServer, free_port
from tests.upstreams import Upstream

ROOT = Path(__file__).resolve().parents[2]


def check(name: str, subject: str = "ip:1", **table: Any) -> Check:
    config, problems = structure({"name": name, **table}, RuleConfig, "$")
    assert problems == []
    return Check(Rule.of(config, 0), f"{name}:{subject}")


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    started = RedisStore(redis_server.url, "t:", timeout=1.0, lease=60.0)
    await started.start()
    yield started
    await started.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


# --- the scripts ----------------------------------------------------------------------


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    """Epoch seconds of a UTC date and time."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


async def test_lua_calendar_matches_python(redis: Redis) -> None:
    probe = CALENDAR + (
        "local name, ends = window(ARGV[1], tonumber(ARGV[2]))\n"
        "return {name, ends, window_end(name)}"
    )
    moments = [
        at(1970, 1, 1),
        at(2000, 2, 29, 23, 59, 59),
        at(2023, 12, 31, 23, 59, 59),
        at(2024, 1, 1),
        at(2024, 2, 28, 12),
        at(2024, 2, 29),
        at(2100, 2, 28, 6),
        at(2100, 3, 1),
    ]
    moments += [1_700_000_000.0 + i * 1_234_567 for i in range(40)]
    periods: tuple[Period, ...] = ("day", "month")
    for now in moments:
        for period in periods:
            name, ends, named_end = await redis.eval(probe, 0, period, int(now))
            assert (name, float(ends)) == calendar_window(period, now), (period, now)
            assert named_end == ends


async def test_all_rules_are_charged_together_or_not_at_all(
    store: RedisStore, redis: Redis
) -> None:
    rate = check("rate", rate="1/h", burst=1)
    quota = check("quota", requests=5, period="day")
    slots = check("slots", concurrency=3)
    first = await store.acquire([rate, quota, slots], "slot-1")
    assert first.admitted
    assert [o.remaining for o in first.outcomes] == [0, 4, 2]
    for i in range(10):
        rejected = await store.acquire([rate, quota, slots], f"slot-x{i}")
        assert not rejected.admitted
        assert [o.allowed for o in rejected.outcomes] == [False, True, True]
        assert 3590 < rejected.outcomes[0].retry_after <= 3600
    window, _ = calendar_window("day", time.time())
    assert await redis.get(f"t:quota:ip:1:{window}") == "1"
    assert await redis.zrange("t:slots:ip:1:slots", 0, -1) == ["slot-1"]
    # Every key expires: nothing grows forever.
    assert 0 < await redis.pttl("t:rate:ip:1") <= 3_600_000
    assert 0 < await redis.ttl(f"t:quota:ip:1:{window}") <= 86400
    assert 0 < await redis.pttl("t:slots:ip:1:slots") <= 60_000


async def test_rate_admits_exactly_the_burst_over_a_long_period(store: RedisStore) -> None:
    rate = check("rate", rate="5/h", burst=5)
    decisions = [await store.acquire([rate], "s") for _ in range(8)]
    assert [d.admitted for d in decisions] == [True] * 5 + [False] * 3
    assert [d.outcomes[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 710 < decisions[5].outcomes[0].retry_after <= 720  # one interval, 3600 / 5


async def test_open_slots_are_renewed_and_a_crashed_gateways_slots_expire(
    redis_server: RedisServer, redis: Redis
) -> None:
    slots = check("slots", concurrency=1)
    alive = RedisStore(redis_server.url, "t:", timeout=1.0, lease=60.0)
    await alive.start()
    try:
        assert (await alive.acquire([slots], "held")).admitted
        before = await redis.zscore("t:slots:ip:1:slots", "held")
        await asyncio.sleep(0.01)
        await alive.renew()
        assert await redis.zscore("t:slots:ip:1:slots", "held") > before  # type: ignore[operator]
    finally:
        await alive.close()
    # A lease long enough that a loaded machine still finds the slot held right after.
    crashed = RedisStore(redis_server.url, "c:", timeout=1.0, lease=2.0)
    await crashed.start()
    assert (await crashed.acquire([slots], "lost")).admitted
    await crashed.close()  # gone without settling, as a crashed gateway would be
    survivor = RedisStore(redis_server.url, "c:", timeout=1.0, lease=60.0)
    await survivor.start()
    try:
        assert not (await survivor.acquire([slots], "new")).admitted
        admitted = False
        for _ in range(200):  # the lost slot's lease (2 s) runs out
            await asyncio.sleep(0.05)
            if (await survivor.acquire([slots], "new")).admitted:
                admitted = True
                break
        assert admitted
    finally:
        await survivor.close()


async def test_an_unreachable_redis_raises_store_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "t:", timeout=0.5, lease=60.0)
    await store.start()  # a dead Redis at start-up is only logged
    try:
        with pytest.raises(StoreUnavailable):
            await store.acquire([check("rate", rate="1/s")], "s")
    finally:
        await store.close()


# --- gateways on Redis ------------------------------------------------------------------


def redis_config(upstream: str, redis_url: str, *, fail_open: bool = True) -> str:
    return f"""
pipeline = ["ratelimit"]
[server]
drain_timeout = "1s"
log_level = "warning"
[plugins.ratelimit]
store = "redis"
redis_url = "{redis_url}"
fail_open = {json.dumps(fail_open)}
[[plugins.ratelimit.rules]]
name = "shared-rate"
key = "client_ip"
rate = "5/h"
burst = 5
routes = ["rate"]
[[plugins.ratelimit.rules]]
name = "daily"
key = "client_ip"
requests = 3
period = "day"
routes = ["quota"]
[upstreams.up]
url = "{upstream}"
[routes.rate]
path = "/rate/{{rest*}}"
upstream = "up"
[routes.quota]
path = "/quota/{{rest*}}"
upstream = "up"
"""


class GatewayProcess:
    """``python -m gateway run`` in a subprocess, on its own port."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("ab")
        command = [sys.executable, "-m", "gateway", "run", "-c", str(config_path)]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=self.log)

    async def ready(self, session: aiohttp.ClientSession) -> GatewayProcess:
        for _ in range(300):
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}")
            try:
                async with session.get(self.url + "/healthz") as response:
                    if response.status == 200:
                        return self
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("gateway did not become ready")

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        self.log.close()


StartProcess = Callable[[], Awaitable[GatewayProcess]]


@pytest.fixture
async def processes(
    tmp_path: Path, serve_app, redis_server: RedisServer
) -> AsyncIterator[tuple[StartProcess, aiohttp.ClientSession]]:
    """Start gateway processes sharing one config and one Redis; stop them after."""
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(redis_config(await serve_app(Upstream().app), redis_server.url))
    started: list[GatewayProcess] = []
    session = aiohttp.ClientSession()

    async def start() -> GatewayProcess:
        process = GatewayProcess(config_path, tmp_path / f"gateway-{len(started)}.log")
        started.append(process)
        return await process.ready(session)

    yield start, session
    await session.close()
    for process in started:
        await process.stop()


async def test_two_gateway_processes_enforce_one_limit(processes) -> None:
    start, session = processes
    first, second = await asyncio.gather(start(), start())

    async def status(i: int) -> int:
        gateway = (first, second)[i % 2]
        async with session.get(f"{gateway.url}/rate/{i}") as response:
            return response.status

    seen = await asyncio.gather(*(status(i) for i in range(12)))
    assert sorted(seen) == [200] * 5 + [429] * 7


async def test_a_quota_outlives_a_gateway_restart(processes) -> None:
    start, session = processes

    async def remaining(gateway: GatewayProcess) -> str | int:
        async with session.get(gateway.url + "/quota/x") as response:
            if response.status != 200:
                return response.status
            return response.headers["X-RateLimit-Remaining"]

    old = await start()
    assert [await remaining(old), await remaining(old)] == ["2", "1"]
    await old.stop()
    new = await start()
    assert [await remaining(new), await remaining(new)] == ["0", 429]


async def test_redis_going_away_fails_open_then_limits_again(
    start_gateway, serve_app, start_redis
) -> None:
    server = await start_redis(password="s3cret-pw")
    gateway = await start_gateway(redis_config(await serve_app(Upstream().app), server.url))

    async def answer() -> tuple[int, bool]:
        async with gateway.request("GET", "/rate/x") as response:
            return response.status, "X-RateLimit-Limit" in response.headers

    assert await answer() == (200, True)
    with capture_logs() as logs:
        await server.stop()
        assert [await answer() for _ in range(7)] == [(200, False)] * 7  # open, unlimited
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["rate-limit store unavailable"]  # once
    assert warnings[0]["fail_open"] is True
    assert "s3cret-pw" not in repr(logs)
    assert f"127.0.0.1:{server.port}" in warnings[0]["store"]
    await server.start()  # same port, empty: counting starts afresh
    assert await eventually(answer, (200, True))  # once the breaker's probe finds it
    assert [await answer() for _ in range(5)] == [(200, True)] * 4 + [(429, True)]


async def test_redis_going_away_fails_closed_when_configured(
    start_gateway, serve_app, redis_server
) -> None:
    gateway = await start_gateway(
        redis_config(await serve_app(Upstream().app), redis_server.url, fail_open=False)
    )
    async with gateway.request("GET", "/rate/x") as response:
        assert response.status == 200
    await redis_server.stop()
    async with gateway.request("GET", "/rate/x") as response:
        assert response.status == 503
        error = (await response.json())["error"]
    assert error["code"] == "service_unavailable"
    assert "rate-limit store is unavailable" in error["message"]
    await redis_server.start()

    async def remaining() -> str | int:
        async with gateway.request("GET", "/rate/x") as response:
            return response.headers.get("X-RateLimit-Remaining", response.status)

    assert await eventually(remaining, "4")  # refused (503) until then: nothing charged


async def test_redis_starting_after_the_gateway_is_picked_up(
    start_gateway, serve_app, redis_server
) -> None:
    await redis_server.stop()
    gateway = await start_gateway(
        redis_config(await serve_app(Upstream().app), redis_server.url, fail_open=False)
    )
    async with gateway.request("GET", "/rate/x") as response:
        assert response.status == 503
    await redis_server.start()

    async def status() -> int:
        async with gateway.request("GET", "/rate/x") as response:
            return response.status

    assert await eventually(status, 200)


async def eventually(ask: Callable[[], Awaitable[Any]], expected: Any) -> bool:
    """Whether ``ask()`` gives ``expected`` within two seconds."""
    for _ in range(100):
        if await ask() == expected:
            return True
        await asyncio.sleep(0.02)
    return False
