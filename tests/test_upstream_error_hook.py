"""``on_upstream_error`` with ``ex.use_upstream`` and ``ex.retry``: failing over to another
upstream when the first cannot be reached or stays silent, through a real gateway.

The first upstream is a port nothing listens on (connection refused) or a real
server that never sends its answer's head; the second is a real server that
echoes what it got.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import EntryPoint
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from gateway.config import parse_config
from gateway.context import GatewayContext
from gateway.errors import GatewayError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from gateway.plugin import Exchange, Plugin
from gateway.registry import GROUP
from gateway.runtime import build_runtime
from gateway.server import Service, make_socket
from tests.proxies import ProxyServer, free_port

#: What the test plugins saw: (plugin, hook, detail).
calls: list[tuple[str, str, Any]] = []


class Failover(Plugin):
    """On an upstream error, switches to the upstream ``to`` (same path) and retries."""

    @attrs.frozen
    class Config:
        to: str = ""
        #: Raise this status instead of retrying (0: retry).
        replace_with: int = 0
        #: Pass replacement headers to `use_upstream` (else keep the current ones).
        own_headers: bool = False

    async def on_upstream_error(self, ex: Exchange, error: GatewayError) -> None:
        calls.append((self.name, "on_upstream_error", error))
        if self.config.replace_with:
            raise ServiceUnavailable("every upstream is down")
        if not self.config.to or ex.attempts > 1:
            return
        upstream = self.upstreams[self.config.to]
        headers = {"X-Chosen": "by-failover"} if self.config.own_headers else None
        ex.use_upstream(self.config.to, upstream.url + ex.path, headers=headers)
        calls.append((self.name, "retry", ex.retry()))

    async def startup(self, context: GatewayContext) -> None:
        self.upstreams = context.config.upstreams

    async def on_response(self, ex: Exchange) -> None:
        calls.append((self.name, "on_response", ex.status))


class Watcher(Plugin):
    """Only records the upstream errors it sees (it is later in the pipeline)."""

    async def on_upstream_error(self, ex: Exchange, error: GatewayError) -> None:
        calls.append((self.name, "on_upstream_error", error))


INSTALLED = {
    name: EntryPoint(name=name, value=f"{__name__}:{cls.__qualname__}", group=GROUP)
    for name, cls in (("failover", Failover), ("watcher", Watcher))
}


@pytest.fixture(autouse=True)
def clear_calls() -> None:
    calls.clear()


@attrs.define
class Good:
    """The upstream that answers: its URL and the requests it echoed."""

    url: str
    seen: list[dict[str, Any]]


@pytest.fixture
async def good(serve_app: Callable[[web.Application], Awaitable[str]]) -> Good:
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        record = {
            "path": request.path,
            "body": (await request.read()).decode(),
            "headers": dict(request.headers),
        }
        seen.append(record)
        return web.json_response(record)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return Good(await serve_app(app), seen)


@pytest.fixture
async def silent(serve_app: Callable[[web.Application], Awaitable[str]]) -> AsyncIterator[str]:
    """An upstream that takes requests and never answers (until the test ends)."""
    done = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.wait_for(done.wait(), 10)
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    yield await serve_app(app)
    done.set()


Post = Callable[[str, bytes], Awaitable[tuple[int, Any]]]


@pytest.fixture
async def gateway() -> AsyncIterator[Callable[[str], Awaitable[Post]]]:
    """Serve a config (with the test plugins installed); return a function that POSTs."""
    services: list[Service] = []
    session = aiohttp.ClientSession()

    async def start(text: str) -> Post:
        runtime = build_runtime(parse_config(text, "test.toml", env={}), installed=INSTALLED)
        service = await Service.create(runtime)
        await service.start(make_socket("127.0.0.1", 0))
        services.append(service)

        async def post(path: str, body: bytes) -> tuple[int, Any]:
            url = f"http://127.0.0.1:{service.port}{path}"
            async with session.post(url, data=body) as response:
                return response.status, json.loads(await response.read())

        return post

    yield start
    await session.close()
    for service in services:
        await service.stop(1)


def config(first: str, second: str, plugins: str, extra: str = "") -> str:
    return f"""
pipeline = ["failover", "watcher"]
{plugins}
[upstreams.first]
url = "{first}"
connect_timeout = "1s"
idle_timeout = "300ms"
headers = {{ Authorization = "Bearer first-upstream-key", X-First = "1" }}

[upstreams.second]
url = "{second}"
headers = {{ Authorization = "Bearer second-upstream-key" }}
{extra}
[routes.all]
path = "/{{rest*}}"
upstream = "first"
"""


FAILOVER = '[plugins.failover]\nto = "second"'


def errors_seen(plugin: str) -> list[GatewayError]:
    return [c[2] for c in calls if c[:2] == (plugin, "on_upstream_error")]


async def test_a_refused_connection_fails_over_with_the_body_replayed(gateway, good) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    post = await gateway(config(refused, good.url, FAILOVER))

    status, answer = await post("/v1/things?x=1", b'{"hello": "world"}')

    assert status == 200
    assert answer["path"] == "/v1/things"
    assert answer["body"] == '{"hello": "world"}'  # the body, sent again
    [error] = errors_seen("failover")
    assert isinstance(error, UpstreamError) and error.kind == "connect"
    # The later plugin saw it first (reverse order); it is not called again on success.
    assert [c[0] for c in calls if c[1] == "on_upstream_error"] == ["watcher", "failover"]
    assert ("failover", "retry", True) in calls
    assert ("failover", "on_response", 200) in calls
    # SECURITY: the first upstream's configured credentials never reach the second.
    headers = good.seen[-1]["headers"]
    assert headers["Authorization"] == "Bearer second-upstream-key"
    assert "X-First" not in headers


async def test_a_timeout_before_the_first_byte_fails_over(gateway, good, silent) -> None:
    post = await gateway(config(silent, good.url, FAILOVER))

    status, answer = await post("/slow", b"payload")

    assert status == 200
    assert answer["body"] == "payload"
    [error] = errors_seen("failover")
    assert isinstance(error, UpstreamTimeout)


async def test_replacement_headers_are_what_the_new_upstream_gets(gateway, good) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    post = await gateway(config(refused, good.url, FAILOVER + "\nown_headers = true"))

    status, answer = await post("/x", b"{}")

    assert status == 200
    assert answer["headers"]["X-Chosen"] == "by-failover"
    assert answer["headers"]["Authorization"] == "Bearer second-upstream-key"


async def test_without_a_retry_the_client_gets_the_upstream_error(gateway, good) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    post = await gateway(config(refused, good.url, ""))

    status, answer = await post("/x", b"{}")

    assert status == 502
    assert answer["error"]["type"] == "upstream_error"
    assert len(errors_seen("failover")) == 1 and len(errors_seen("watcher")) == 1
    assert good.seen == []
    # The error answer still goes through the response hooks.
    assert ("failover", "on_response", 502) in calls


async def test_a_hook_may_answer_with_another_error(gateway, good) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    post = await gateway(config(refused, good.url, "[plugins.failover]\nreplace_with = 503"))

    status, answer = await post("/x", b"{}")

    assert status == 503
    assert answer["error"]["message"] == "every upstream is down"


async def test_an_upstream_that_answers_is_no_upstream_error(gateway, good) -> None:
    post = await gateway(config(good.url, good.url, FAILOVER))

    status, _ = await post("/x", b"{}")

    assert status == 200
    assert errors_seen("failover") == [] and errors_seen("watcher") == []
    assert len(good.seen) == 1


async def test_the_new_upstream_is_reached_through_its_own_proxy(
    gateway, good, start_proxy: Callable[..., Awaitable[ProxyServer]]
) -> None:
    proxy = await start_proxy("http")
    refused = f"http://127.0.0.1:{free_port()}"
    extra = f'proxy = ["{proxy.url}"]'
    post = await gateway(config(refused, good.url, FAILOVER, extra=extra))

    status, _ = await post("/x", b"{}")

    assert status == 200
    port = int(good.url.rsplit(":", 1)[1])
    assert await proxy.tunnels_to(port) == 1
