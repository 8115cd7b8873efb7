"""Shared fixtures: a real gateway on loopback in front of real upstream servers."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import logs
from gateway.config import default_config_text
from gateway.runtime import load_runtime
from gateway.server import Service, make_socket
from tests.proxies import ProxyServer

StartGateway = Callable[..., Awaitable["RunningGateway"]]


class RunningGateway:
    """A gateway serving on 127.0.0.1, with a client session pointed at it."""

    def __init__(self, service: Service, session: aiohttp.ClientSession) -> None:
        self.service = service
        self.url = f"http://127.0.0.1:{service.port}"
        self.session = session

    def request(
        self, method: str, path: str, **kwargs: object
    ) -> aiohttp.client._RequestContextManager:
        return self.session.request(method, self.url + path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """Start gateways from config text (default: the shipped config) and stop them after."""
    running: list[RunningGateway] = []

    async def start(
        config: str | None = None, env: Mapping[str, str] | None = None
    ) -> RunningGateway:
        merged = {**os.environ, **(env or {})}
        runtime = load_runtime(
            config if config is not None else default_config_text(), "test.toml", merged
        )
        service = await Service.create(runtime)
        await service.start(make_socket("127.0.0.1", 0))
        session = aiohttp.ClientSession(auto_decompress=False)
        gateway = RunningGateway(service, session)
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        await gateway.session.close()
        await gateway.service.stop(drain_timeout=1)


@pytest.fixture
async def serve_app() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Serve an aiohttp app on 127.0.0.1 and return its base URL."""
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
async def start_proxy() -> AsyncIterator[Callable[..., Awaitable[ProxyServer]]]:
    """Start real pproxy servers (``scheme``, optional ``user``/``password``); stop them after."""
    proxies: list[ProxyServer] = []

    async def start(
        scheme: str, user: str | None = None, password: str | None = None
    ) -> ProxyServer:
        proxy = ProxyServer(scheme, user, password)
        proxies.append(proxy)
        return await proxy.start()

    yield start
    for proxy in proxies:
        await proxy.stop()


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the process's log writer writes; structlog's config is restored afterwards."""
    saved = structlog.get_config()
    stream = io.StringIO()
    monkeypatch.setattr(logs, "_WRITER", logs.BlockWriter(stream))
    monkeypatch.setattr(logs, "_JSON", None)
    yield stream
    structlog.configure(**saved)
