"""The test kit for plugin authors: pytest fixtures that run a real gateway on loopback.

Installed with the gateway and registered through the ``pytest11`` entry point (as
pytest-aiohttp registers its own), so a plugin's tests need no conftest: they ask for

- ``start_gateway``: ``await start_gateway(config_text, env=None, plugins=None)`` starts a
  gateway serving ``config_text`` (default: the shipped config) on a free port of
  127.0.0.1 and returns a `RunningGateway` (``.url``, ``.request(method, path)``,
  ``.context``); ``plugins`` maps names to plugin classes not installed as entry points
  (the plugin under test, say).  Every gateway is stopped after the test.
- ``serve_app``: ``await serve_app(app)`` serves an aiohttp app (a fake upstream) and
  returns its base URL.
- ``simulator``: the built-in simulated upstreams (`gateway.testing`: a ChatGPT web
  backend and an OpenAI API), started for the test; ``simulator.openai_url`` and
  ``simulator.chatgpt_url`` are the URLs to put in a config.

The fixtures are async: set ``asyncio_mode = "auto"`` (pytest-asyncio) in the pytest
configuration.  ``docs/plugins.md`` has a complete example.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib.metadata import EntryPoint
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import default_config_text, parse_config
from gateway.context import GatewayContext
from gateway.plugin import Plugin
from gateway.registry import GROUP, installed_plugins
from gateway.runtime import Runtime, build_runtime, load_runtime
from gateway.server import Service, make_socket
from gateway.testing.server import Simulator, start_simulator

__all__ = ["RunningGateway", "ServeApp", "StartGateway", "serve_app", "simulator", "start_gateway"]

#: What ``serve_app`` is: serve an app, get its base URL.
ServeApp = Callable[[web.Application], Awaitable[str]]


class RunningGateway:
    """A gateway serving on 127.0.0.1, with a client session pointed at it."""

    def __init__(self, service: Service, session: aiohttp.ClientSession) -> None:
        self.service = service
        #: The gateway's base URL (``http://127.0.0.1:<port>``).
        self.url = f"http://127.0.0.1:{service.port}"
        #: A client session (responses are not decompressed: bytes as the gateway sent them).
        self.session = session

    @property
    def context(self) -> GatewayContext:
        """What the plugins' ``startup`` received: the config, ``statuses()``, ..."""
        return self.service.runtime.context

    def request(
        self, method: str, path: str, **kwargs: Any
    ) -> aiohttp.client._RequestContextManager:
        """``session.request`` on the gateway's ``path``; use it with ``async with``."""
        return self.session.request(method, self.url + path, **kwargs)


#: What ``start_gateway`` is.
StartGateway = Callable[..., Awaitable[RunningGateway]]


def _runtime(
    config: str, env: Mapping[str, str], plugins: Mapping[str, type[Plugin]] | None
) -> Runtime:
    """The config's runtime; ``plugins`` are loaded as if installed under their names."""
    if not plugins:
        return load_runtime(config, "test.toml", env)
    extra = {
        name: EntryPoint(name, f"{cls.__module__}:{cls.__qualname__}", GROUP)
        for name, cls in plugins.items()
    }
    return build_runtime(parse_config(config, "test.toml", env), {**installed_plugins(), **extra})


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """Start gateways from config text (default: the shipped config); stop them after."""
    running: list[RunningGateway] = []

    async def start(
        config: str | None = None,
        env: Mapping[str, str] | None = None,
        plugins: Mapping[str, type[Plugin]] | None = None,
    ) -> RunningGateway:
        text = config if config is not None else default_config_text()
        runtime = _runtime(text, {**os.environ, **(env or {})}, plugins)
        service = await Service.create(runtime)
        await service.start(make_socket("127.0.0.1", 0))
        gateway = RunningGateway(service, aiohttp.ClientSession(auto_decompress=False))
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        await gateway.session.close()
        await gateway.service.stop(drain_timeout=1)


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Serve aiohttp apps on 127.0.0.1 (each returns its base URL); stop them after."""
    servers: list[TestServer] = []

    async def serve(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield serve
    for server in servers:
        await server.close()


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    """The simulated ChatGPT web backend and OpenAI API, on a free port, for one test."""
    started = await start_simulator()
    async with started:
        yield started
