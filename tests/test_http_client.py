"""`HttpClient` (what plugins get as ``context.http``), against real servers and proxies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import EntryPoint

import aiohttp
import pytest
from aiohttp import web

from gateway.config import parse_config
from gateway.context import GatewayContext
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.forwarder import Forwarder
from gateway.http_client import HttpClient
from gateway.plugin import Exchange, Plugin
from gateway.registry import GROUP
from gateway.runtime import build_runtime
from gateway.server import Service, make_socket
from gateway.transport import ProxyConnectError
from tests.proxies import BlackHole, Microsocks, ProxyServer, free_port

ServeApp = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def service(serve_app: ServeApp) -> str:
    """A real service: echoes what it got; ``/big`` answers 100 kB; ``/silent`` never answers."""
    done = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "method": request.method,
                "path_qs": request.path_qs,
                "body": (await request.read()).decode(),
                "headers": dict(request.headers),
            },
            headers={"X-Served": "yes"},
        )

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 100_000)

    async def silent(request: web.Request) -> web.Response:
        await asyncio.wait_for(done.wait(), 10)
        return web.Response(text="too late")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for part in (b"one ", b"two ", b"three"):
            await response.write(part)
            await asyncio.sleep(0.01)
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/silent", silent)
    app.router.add_get("/stream", stream)
    app.router.add_route("*", "/{tail:.*}", echo)

    async def release(_: web.Application) -> None:
        done.set()

    app.on_shutdown.append(release)
    return await serve_app(app)


def client(text: str = "") -> tuple[HttpClient, Forwarder]:
    forwarder = Forwarder()
    upstreams = parse_config(text + ROUTE, "test.toml", env={}).upstreams if text else {}
    return HttpClient(forwarder, upstreams), forwarder


ROUTE = '\n[routes.r]\npath = "/x"\nupstream = "svc"\n'


@pytest.fixture
async def closing() -> AsyncIterator[list[Forwarder]]:
    forwarders: list[Forwarder] = []
    yield forwarders
    for forwarder in forwarders:
        await forwarder.close()


async def test_a_request_gets_status_headers_and_body(service: str, closing) -> None:
    http, forwarder = client()
    closing.append(forwarder)

    answer = await http.request(
        "POST", service + "/a?b=1", headers={"X-Token": "t"}, body=b'{"k": 1}'
    )

    assert answer.status == 200
    assert answer.headers["X-Served"] == "yes"
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["path_qs"] == "/a?b=1"
    assert seen["body"] == '{"k": 1}'
    assert seen["headers"]["X-Token"] == "t"
    assert seen["headers"]["Content-Length"] == "8"


async def test_connections_are_kept_alive_between_calls(service: str, closing) -> None:
    http, forwarder = client()
    closing.append(forwarder)

    ports = set()
    for _ in range(3):
        answer = await http.request("GET", service + "/a")
        ports.add(answer.json()["headers"]["Host"])
    [pool] = forwarder.transport._pools.values()

    assert len(ports) == 1
    assert len(pool._open) == 1  # one connection carried the three calls


async def test_a_streamed_answer_arrives_in_parts(service: str, closing) -> None:
    http, forwarder = client()
    closing.append(forwarder)

    async with http.stream("GET", service + "/stream") as answer:
        assert answer.status == 200
        parts = [chunk async for chunk in answer]

    assert b"".join(parts) == b"one two three"


async def test_a_refused_connection_is_a_502(closing) -> None:
    http, forwarder = client()
    closing.append(forwarder)

    with pytest.raises(UpstreamError) as caught:
        await http.request("GET", f"http://127.0.0.1:{free_port()}/")

    assert caught.value.status == 502 and caught.value.kind == "connect"


async def test_silence_past_the_timeout_is_a_504(service: str, closing) -> None:
    http, forwarder = client()
    closing.append(forwarder)

    with pytest.raises(UpstreamTimeout) as caught:
        await http.request("GET", service + "/silent", timeout=0.3)

    assert caught.value.status == 504


async def test_an_answer_over_the_size_limit_is_refused(service: str, closing) -> None:
    http, forwarder = client()
    closing.append(forwarder)

    with pytest.raises(UpstreamError, match="more than 1000 bytes"):
        await http.request("GET", service + "/big", max_size=1000)
    assert (await http.request("GET", service + "/big")).body == b"x" * 100_000


async def test_a_call_goes_through_the_given_proxy(service: str, start_proxy, closing) -> None:
    proxy: ProxyServer = await start_proxy("socks5")
    http, forwarder = client()
    closing.append(forwarder)

    answer = await http.request("GET", service + "/via", proxy=proxy.url)

    assert answer.status == 200
    assert await proxy.tunnels_to(int(service.rsplit(":", 1)[1])) == 1


async def test_a_socks5_proxy_with_credentials_is_used(service: str, closing) -> None:
    proxy = await Microsocks("user", "secret-pw").start()
    try:
        http, forwarder = client()
        closing.append(forwarder)
        answer = await http.request("GET", service + "/via", proxy=proxy.url)
        assert answer.status == 200

        wrong = proxy.url.replace("secret-pw", "wrong-pw")
        with pytest.raises(ProxyConnectError) as caught:
            await http.request("GET", service + "/via", proxy=wrong)
        assert "credentials" in caught.value.message
        assert "wrong-pw" not in caught.value.message  # SECURITY: never the password
    finally:
        await proxy.stop()


async def test_a_hung_proxy_times_out_as_the_proxys_failure(service: str, closing) -> None:
    hole = await BlackHole().start()
    try:
        http, forwarder = client()
        closing.append(forwarder)
        with pytest.raises(ProxyConnectError, match="timed out"):
            await http.request("GET", service + "/", proxy=hole.url(), timeout=0.3)
    finally:
        await hole.stop()


async def test_an_upstream_call_uses_its_proxy(service: str, start_proxy, closing) -> None:
    proxy: ProxyServer = await start_proxy("http")
    text = f'[upstreams.svc]\nurl = "{service}"\nproxy = ["{proxy.url}"]\n'
    http, forwarder = client(text)
    closing.append(forwarder)

    answer = await http.request("GET", service + "/via", upstream="svc")

    assert answer.status == 200
    # SECURITY: not directly, although no proxy was named: the upstream's own.
    assert await proxy.tunnels_to(int(service.rsplit(":", 1)[1])) == 1


class Fetch(Plugin):
    """Answers every request with what the service said, fetched through ``context.http``."""

    async def startup(self, context: GatewayContext) -> None:
        self.http = context.http
        self.url = context.config.upstreams["svc"].url

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        try:
            answer = await self.http.request("GET", self.url + "/fetched", upstream="svc")
        except GatewayError as exc:
            return exc.response()
        return web.json_response({"status": answer.status, "seen": answer.json()["path_qs"]})


async def test_plugins_get_the_client_as_context_http(service: str) -> None:
    text = f'pipeline = ["fetch"]\n[upstreams.svc]\nurl = "{service}"\n' + ROUTE
    installed = {"fetch": EntryPoint(name="fetch", value=f"{__name__}:Fetch", group=GROUP)}
    runtime = build_runtime(parse_config(text, "test.toml", env={}), installed=installed)
    service_ = await Service.create(runtime)
    await service_.start(make_socket("127.0.0.1", 0))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{service_.port}/x") as response,
        ):
            assert response.status == 200
            assert await response.json() == {"status": 200, "seen": "/fetched"}
    finally:
        await service_.stop(1)
