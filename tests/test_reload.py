"""Reload in process: the old runtime's plugins shut down after their last request."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint

import aiohttp

from gateway.config import parse_config
from gateway.plugin import Plugin
from gateway.registry import installed_plugins
from gateway.runtime import build_runtime
from gateway.server import Service, make_socket
from tests.upstreams import Upstream

events: list[str] = []


class Lifecycle(Plugin):
    """Records its start-up and shut-down, tagged with its config's version."""

    async def startup(self, context: object) -> None:
        events.append(f"startup {self.name}")

    async def shutdown(self) -> None:
        events.append(f"shutdown {self.name}")


def runtime_for(url: str, version: str):
    installed = {
        **installed_plugins(),
        version: EntryPoint(name=version, value=f"{__name__}:Lifecycle", group="gateway.plugins"),
    }
    text = f"""
pipeline = ["{version}"]
[upstreams.up]
url = "{url}"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""
    return build_runtime(parse_config(text, "test.toml", env={}), installed)


async def test_old_plugins_shut_down_when_their_last_request_ends(serve_app):
    events.clear()
    upstream = Upstream()
    url = await serve_app(upstream.app)
    service = await Service.create(runtime_for(url, "v1"))
    await service.start(make_socket("127.0.0.1", 0))
    base = f"http://127.0.0.1:{service.port}"
    try:
        async with aiohttp.ClientSession() as session:
            stream = await session.get(base + "/sse")
            await stream.content.readuntil(b"\n\n")
            await service.reload(runtime_for(url, "v2"))
            async with session.get(base + "/plain") as response:
                assert response.status == 200
            await asyncio.sleep(0.05)
            assert events == ["startup v1", "startup v2"]  # v1 still serves the open stream
            upstream.gate.set()
            await stream.read()
            stream.release()
            for _ in range(100):
                if "shutdown v1" in events:
                    break
                await asyncio.sleep(0.01)
            assert events == ["startup v1", "startup v2", "shutdown v1"]
    finally:
        await service.stop(1)
    assert events[-1] == "shutdown v2"


async def test_healthz_says_draining_while_streams_finish(serve_app):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    service = await Service.create(runtime_for(url, "v1"))
    await service.start(make_socket("127.0.0.1", 0))
    base = f"http://127.0.0.1:{service.port}"
    connector = aiohttp.TCPConnector(limit_per_host=1)  # one kept-alive connection for probes
    async with (
        aiohttp.ClientSession(connector=connector) as probes,
        aiohttp.ClientSession() as streams,
    ):
        async with probes.get(base + "/healthz") as response:
            assert response.status == 200
        stream = await streams.get(base + "/sse")
        await stream.content.readuntil(b"\n\n")
        stopping = asyncio.create_task(service.stop(5))
        await asyncio.sleep(0.1)
        async with probes.get(base + "/healthz") as response:
            assert response.status == 503
            assert await response.json() == {"status": "draining"}
        upstream.gate.set()
        await stream.read()
        stream.release()
        assert await stopping is True
