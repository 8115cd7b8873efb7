"""Limits that hold under bursts: real gateway processes sharing one real ``redis-server``.

A thousand concurrent requests from one client key against ``requests = 100``
a day must get exactly 100 answers 200 and 900 answers 429, run after run,
whether two ``gateway run`` processes or one with ``--workers 2`` share the
Redis, with ``fail_open`` true or false: the gateway's own connection pool
must never decide.  The same for a concurrency rule with 50 streams too many.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from gateway.keys import new_key
from tests.test_operations import GatewayProcess, children

REQUESTS = 1000
QUOTA = 100
SLOTS = 100
STREAMS = SLOTS + 50
RUNS = 3

pytestmark = pytest.mark.skipif(
    int(Path("/proc/sys/net/core/somaxconn").read_text()) < REQUESTS,
    reason="the kernel caps listen queues under the burst (net.core.somaxconn)",
)


class HoldingUpstream:
    """``/plain`` answers at once; ``/hold`` holds every request until released."""

    def __init__(self) -> None:
        self.held = 0
        self.most_held = 0
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/plain", self.plain)
        self.app.router.add_get("/hold", self.hold)

    async def plain(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def hold(self, request: web.Request) -> web.Response:
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        try:
            await asyncio.wait_for(self.release.wait(), 30)
        finally:
            self.held -= 1
        return web.json_response({"ok": True})


def config(upstream: str, redis_url: str, digest: str, fail_open: bool) -> str:
    return f"""
pipeline = ["auth", "ratelimit"]
[server]
log_level = "info"  # "gateway started" tells when both workers are up
drain_timeout = "1s"
[plugins.auth]
mode = "keys"
keys.burst = {{ sha256 = "{digest}" }}
credentials.up = [{{ name = "only", token = "upstream-token" }}]
[plugins.ratelimit]
store = "redis"
redis_url = "{redis_url}"
fail_open = {str(fail_open).lower()}
[[plugins.ratelimit.rules]]
name = "daily"
key = "identity"
requests = {QUOTA}
period = "day"
routes = ["plain"]
[[plugins.ratelimit.rules]]
name = "streams"
key = "identity"
concurrency = {SLOTS}
routes = ["hold"]
[upstreams.up]
url = "{upstream}"
[routes.plain]
path = "/plain"
upstream = "up"
[routes.hold]
path = "/hold"
upstream = "up"
"""


async def stop(gateway: GatewayProcess) -> None:
    """SIGTERM, then kill whatever is left, workers included."""
    process = gateway.process
    if process is None or process.returncode is not None:
        return
    workers = children(process.pid)
    gateway.signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        await gateway.kill()


async def statuses(session: aiohttp.ClientSession, urls: list[str]) -> collections.Counter[int]:
    async def status(url: str) -> int:
        async with session.get(url) as response:
            await response.read()
            return response.status

    return collections.Counter(await asyncio.gather(*(status(url) for url in urls)))


async def streams_at_once(
    session: aiohttp.ClientSession, bases: list[str], upstream: HoldingUpstream
) -> collections.Counter[int]:
    """Open `STREAMS` held requests at once; count who got in before any is released."""
    refused: collections.Counter[int] = collections.Counter()

    async def stream(url: str) -> int:
        async with session.get(url) as response:
            if response.status != 200:
                refused[response.status] += 1
            await response.read()
            return response.status

    upstream.release.clear()
    tasks = [asyncio.create_task(stream(bases[i % len(bases)] + "/hold")) for i in range(STREAMS)]
    for _ in range(600):  # until every stream is held upstream or refused
        if upstream.held + sum(refused.values()) >= STREAMS:
            break
        await asyncio.sleep(0.05)
    held = upstream.held
    upstream.release.set()
    answered = collections.Counter(await asyncio.gather(*tasks))
    assert held == upstream.most_held == SLOTS, (held, upstream.most_held, answered)
    upstream.most_held = 0
    return answered


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail_open", "fail_closed"])
@pytest.mark.parametrize("workers", [False, True], ids=["two_processes", "workers_2"])
async def test_a_burst_gets_exactly_the_quota(
    tmp_path, serve_app, redis_server, fail_open, workers
):
    upstream = HoldingUpstream()
    key, digest = new_key()
    path = tmp_path / "gateway.toml"
    path.write_text(config(await serve_app(upstream.app), redis_server.url, digest, fail_open))
    if workers:
        gateways = [GatewayProcess(path, "--workers", "2")]
    else:
        gateways = [GatewayProcess(path), GatewayProcess(path)]
    redis = Redis.from_url(redis_server.url)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        headers={"Authorization": f"Bearer {key}"},
        timeout=aiohttp.ClientTimeout(total=60),
    )
    try:
        await asyncio.gather(*(gateway.start() for gateway in gateways))
        if workers:
            await both_workers_started(gateways[0])
        bases = [gateway.url for gateway in gateways]
        urls = [bases[i % len(bases)] + "/plain" for i in range(REQUESTS)]
        for _ in range(RUNS):
            await redis.flushdb()
            seen = await statuses(session, urls)
            assert seen == {200: QUOTA, 429: REQUESTS - QUOTA}, seen
        await redis.flushdb()
        assert await streams_at_once(session, bases, upstream) == {200: SLOTS, 429: STREAMS - SLOTS}
        # Every slot was freed: the next stream gets in at once.
        upstream.release.set()
        assert await statuses(session, [bases[0] + "/hold"]) == {200: 1}
    finally:
        await session.close()
        await redis.aclose()
        for gateway in gateways:
            await stop(gateway)


async def both_workers_started(gateway: GatewayProcess) -> None:
    for _ in range(200):
        if sum('"gateway started"' in line for line in gateway.output) == 2:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the workers did not start: {gateway.output}")
