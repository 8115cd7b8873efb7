"""``upstream_proxy``: HTTP and SOCKS proxies (real pproxy and microsocks servers), credentials,
rotation, hung proxies; and an upstream's proxy is used with or without the plugin."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs
from yarl import URL

from gateway.testing import DEMO_ACCOUNT, start_simulator
from tests.proxies import BlackHole, Microsocks, free_port
from tests.upstreams import Upstream

CATCH_ALL = """
[routes.all]
path = "/{rest*}"
upstream = "up"
"""


def config(
    url: str,
    proxy: str | list[str],
    routes: str = CATCH_ALL,
    pipeline: str = '"access_log", "upstream_proxy"',
    connect_timeout: str = "2s",
) -> str:
    proxies = proxy if isinstance(proxy, list) else [proxy]
    listed = ", ".join(f'"{p}"' for p in proxies)
    return f"""
pipeline = [{pipeline}]
[upstreams.up]
url = "{url}"
proxy = [{listed}]
connect_timeout = "{connect_timeout}"
[plugins.upstream_proxy]
cooldown = "60s"
{routes}
"""


async def fetch(gateway, path="/via-proxy"):
    async with gateway.request("GET", path) as response:
        return response.status, await response.read()


@pytest.fixture
async def black_hole():
    hole = await BlackHole().start()
    yield hole
    await hole.stop()


@pytest.fixture
async def microsocks():
    proxy = await Microsocks("alice", "right-password").start()
    yield proxy
    await proxy.stop()


async def test_each_proxy_kind_carries_the_request(serve_app, start_gateway, start_proxy):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    port = int(url.rsplit(":", 1)[1])
    for scheme, user in (
        ("http", None),
        ("socks5", None),
        ("socks4", None),
        ("socks5", "alice"),
        ("http", "bob"),
    ):
        proxy = await start_proxy(scheme, user, "s3cret" if user else None)
        gateway = await start_gateway(config(url, proxy.url))
        status, _ = await fetch(gateway)
        assert status == 200, (scheme, user)
        assert await proxy.tunnels_to(port) == 1, (scheme, user, proxy.log)


PASSWORD = "s3cret-canary"


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("nothing listens", "proxy unreachable"),
        ("hung", "proxy timed out"),
        ("pproxy socks5", "proxy refused the credentials"),
        ("pproxy http", "proxy refused the credentials"),
        ("microsocks", "proxy refused the credentials"),
    ],
)
async def test_proxy_failures_say_which_and_never_the_password(
    serve_app, start_gateway, start_proxy, black_hole, microsocks, case, said
):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    if case == "nothing listens":
        proxy = f"socks5://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    elif case == "hung":
        proxy = f"http://alice:{PASSWORD}@127.0.0.1:{black_hole.port}"
    elif case == "microsocks":
        proxy = microsocks.url.replace("right-password", PASSWORD)
    else:
        running = await start_proxy(case.split()[1], "alice", "right-password")
        proxy = running.url.replace("right-password", PASSWORD)
    gateway = await start_gateway(config(url, proxy, connect_timeout="300ms"))
    with capture_logs() as logs:
        status, body = await fetch(gateway)
    error = json.loads(body)["error"]
    assert status == 502 and error["code"] == "proxy_error", error
    assert said in error["message"] and "alice:***@127.0.0.1" in error["message"]
    assert PASSWORD not in repr(logs) and PASSWORD not in error["message"]
    assert any(e["event"] == "proxy failed, skipping it for a while" for e in logs)
    assert upstream.requests == []


async def test_a_hung_proxy_fails_one_request_then_is_skipped(
    serve_app, start_gateway, start_proxy, black_hole
):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    good = await start_proxy("socks5")
    gateway = await start_gateway(
        config(url, [black_hole.url(), good.url], connect_timeout="300ms")
    )
    statuses = [(await fetch(gateway))[0] for _ in range(6)]
    assert statuses == [502, 200, 200, 200, 200, 200]
    assert black_hole.connections == 1


@pytest.mark.parametrize(
    ("pipeline", "routes"),
    [
        ('"access_log"', CATCH_ALL),  # no upstream_proxy plugin at all
        ('"access_log", "upstream_proxy"', CATCH_ALL + 'skip = ["upstream_proxy"]\n'),
    ],
    ids=["no plugin", "skipped"],
)
async def test_the_upstreams_proxy_is_used_without_the_plugin(
    serve_app, start_gateway, start_proxy, black_hole, pipeline, routes
):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    port = int(url.rsplit(":", 1)[1])
    proxy = await start_proxy("socks5")
    gateway = await start_gateway(config(url, proxy.url, routes, pipeline))
    assert (await fetch(gateway))[0] == 200
    assert await proxy.tunnels_to(port) == 1
    # And a broken one is skipped there too, after its one failure.
    gateway = await start_gateway(
        config(url, [black_hole.url(), proxy.url], routes, pipeline, connect_timeout="300ms")
    )
    assert [(await fetch(gateway))[0] for _ in range(4)] == [502, 200, 200, 200]


async def test_a_login_route_without_the_plugin_goes_through_the_proxy(start_gateway, start_proxy):
    proxy = await start_proxy("socks5")
    async with await start_simulator() as sim:
        text = f"""
pipeline = ["access_log"]
[upstreams.chatgpt]
url = "{sim.chatgpt_url}"
proxy = "{proxy.url}"
[plugins.chatgpt_login]
web_url = "{sim.web_url}"
auth0_url = "{sim.auth0_url}"
[routes.login]
path = "/auth/login"
upstream = "chatgpt"
pipeline = ["chatgpt_login"]
"""
        gateway = await start_gateway(text)
        body = {"username": DEMO_ACCOUNT.email, "password": DEMO_ACCOUNT.password}
        async with gateway.request("POST", "/auth/login", json=body) as response:
            assert response.status == 200
        assert await proxy.tunnels_to(URL(sim.auth0_url).port or 0) >= 1, proxy.log


async def test_go_chatgpt_api_proxy_variable_sets_the_default_proxy(
    serve_app, start_gateway, start_proxy
):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    port = int(url.rsplit(":", 1)[1])
    proxy = await start_proxy("socks5")
    env = {"CHATGPT_BASE_URL": url + "/backend-api", "GO_CHATGPT_API_PROXY": proxy.url}
    gateway = await start_gateway(None, env)  # the shipped default config
    async with gateway.request("GET", "/conversations", headers={"Authorization": "t"}) as response:
        assert response.status == 200
    assert await proxy.tunnels_to(port) == 1


async def test_rotation_and_a_failed_proxy_is_skipped(serve_app, start_gateway, start_proxy):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    port = int(url.rsplit(":", 1)[1])
    first = await start_proxy("http")
    second = await start_proxy("socks5")
    dead = f"socks5://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = await start_gateway(config(url, [first.url, dead, second.url]))
    statuses = [(await fetch(gateway))[0] for _ in range(9)]
    # The dead proxy costs exactly one failed request, then is skipped for the cooldown.
    assert statuses.count(502) == 1
    assert len(upstream.requests) == 8
    # Both live proxies carried traffic (each keeps its pooled connection open).
    assert await first.tunnels_to(port) >= 1 and await second.tunnels_to(port) >= 1
    # Its status, for an admin page: the dead one cools down until a stated time.
    proxies = gateway.service.runtime.context.statuses()["upstream_proxy"]["proxies"]
    assert proxies[first.url] == proxies[second.url] == {"state": "healthy"}
    assert proxies[dead]["state"] == "cooling down" and proxies[dead]["until"].endswith("+00:00")


async def test_route_level_proxies_override_the_upstreams(serve_app, start_gateway, start_proxy):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    port = int(url.rsplit(":", 1)[1])
    unused = await start_proxy("http")
    chosen = await start_proxy("socks5")
    special = f"""
[routes.special]
path = "/special"
upstream = "up"
[routes.special.plugins.upstream_proxy]
proxies = ["{chosen.url}"]
"""
    gateway = await start_gateway(config(url, unused.url, special + CATCH_ALL))
    assert (await fetch(gateway, "/special"))[0] == 200
    assert await chosen.tunnels_to(port) == 1
    assert await unused.tunnels_to(port, expect=0) == 0
    assert (await fetch(gateway, "/other"))[0] == 200
    assert await unused.tunnels_to(port) == 1
