"""``upstream_proxy``: HTTP and SOCKS proxies (real pproxy servers), credentials, rotation."""

from __future__ import annotations

from structlog.testing import capture_logs

from tests.proxies import free_port
from tests.upstreams import Upstream

CATCH_ALL = """
[routes.all]
path = "/{rest*}"
upstream = "up"
"""


def config(url: str, proxy: str | list[str], routes: str = CATCH_ALL) -> str:
    proxies = proxy if isinstance(proxy, list) else [proxy]
    listed = ", ".join(f'"{p}"' for p in proxies)
    return f"""
pipeline = ["access_log", "upstream_proxy"]
[upstreams.up]
url = "{url}"
proxy = [{listed}]
connect_timeout = "2s"
[plugins.upstream_proxy]
cooldown = "60s"
{routes}
"""


async def fetch(gateway, path="/via-proxy"):
    async with gateway.request("GET", path) as response:
        return response.status, await response.read()


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


async def test_wrong_proxy_credentials_are_a_502_without_the_password(
    serve_app, start_gateway, start_proxy
):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    proxy = await start_proxy("socks5", "alice", "right-password")
    wrong = proxy.url.replace("right-password", "wrong-password-canary")
    gateway = await start_gateway(config(url, wrong))
    with capture_logs() as logs:
        status, body = await fetch(gateway)
    assert status == 502
    assert b"wrong-password-canary" not in body
    assert b"***" in body or b"proxy" in body
    assert upstream.requests == []
    assert "wrong-password-canary" not in repr(logs)


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
