"""AddHeader in a real gateway, with the gateway's test kit (no conftest needed).

Run: ``pip install -e '.[test]'`` in this folder, then ``pytest``.
"""

from aiohttp import web
from gateway_plugin_example import AddHeader

CONFIG = """
pipeline = ["add_header"]

[plugins.add_header]
name = "X-Team"
value = "research"

[upstreams.up]
url = "{upstream_url}"

[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


async def test_the_upstream_gets_the_header(start_gateway, serve_app) -> None:
    received = []

    async def echo(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    upstream_url = await serve_app(app)
    gateway = await start_gateway(
        CONFIG.format(upstream_url=upstream_url), plugins={"add_header": AddHeader}
    )
    async with gateway.request("GET", "/x", headers={"X-Team": "forged"}) as response:
        assert response.status == 200
    assert received[0]["X-Team"] == "research"


async def test_the_simulated_openai_api_answers_through_it(start_gateway, simulator) -> None:
    config = CONFIG.format(upstream_url=simulator.openai_url)
    gateway = await start_gateway(config, plugins={"add_header": AddHeader})
    key = {"Authorization": "Bearer sk-test"}  # the simulator takes any key
    async with gateway.request("GET", "/v1/models", headers=key) as response:
        assert response.status == 200
        assert (await response.json())["object"] == "list"
