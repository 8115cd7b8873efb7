"""Reload in process: the old runtime's plugins shut down after their last request."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint

import aiohttp
import attrs

from gateway.config import Bytes, Seconds, ServerConfig, parse_config
from gateway.plugin import Plugin
from gateway.registry import installed_plugins
from gateway.running import settings_needing_restart
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


def test_the_settings_a_reload_cannot_apply_are_named():
    in_force = ServerConfig(port=8080, client_idle_timeout=Seconds(60))
    new = attrs.evolve(
        in_force,
        host="127.0.0.1",
        port=9090,
        client_idle_timeout=Seconds(5),
        log_level="debug",
        max_body_size=Bytes(1024),  # applied at once: not named
        trusted_hops=1,
        drain_timeout=Seconds(5),
    )
    assert settings_needing_restart(in_force, new, overridden=()) == [
        "server.host",
        "server.port",
        "server.client_idle_timeout",
        "server.log_level",
    ]
    # What the command line gave wins over the file: a change there changes nothing.
    assert settings_needing_restart(in_force, new, overridden=("host", "port")) == [
        "server.client_idle_timeout",
        "server.log_level",
    ]
    assert settings_needing_restart(in_force, in_force, overridden=()) == []
