"""What the listening server says about itself."""

from __future__ import annotations

from aiohttp import web

from tests.upstreams import Upstream


def config(upstream_url: str) -> str:
    return f"""
[upstreams.up]
url = "{upstream_url}"
[routes.all]
path = "/up/{{rest*}}"
upstream = "up"
upstream_path = "/{{rest}}"
"""


async def test_the_server_header_names_the_gateway_without_versions(start_gateway, serve_app):
    async def branded(request: web.Request) -> web.Response:
        return web.Response(text="hi", headers={"Server": "upstream/1.0"})

    upstream = Upstream()
    upstream.app.router.add_get("/branded", branded)
    gateway = await start_gateway(config(await serve_app(upstream.app)), {})
    for path in ("/healthz", "/nowhere", "/up/plain", "/up/sse"):
        async with gateway.request("GET", path) as response:
            assert response.headers.getall("Server") == ["chatgpt-gateway"], path
            upstream.gate.set()
            await response.read()
    async with gateway.request("GET", "/up/branded") as response:
        assert response.headers.getall("Server") == ["upstream/1.0"]  # the upstream's own
