"""``Exchange.usage`` filled by the gateway for a plugin that needs it (`Plugin.needs_usage`).

Through a real gateway in front of the simulated OpenAI API, with a probe plugin served
by the test kit's ``plugins=`` (not installed).
"""

from __future__ import annotations

from typing import ClassVar

from gateway.api import Exchange, Plugin, Usage
from tests.upstreams import Upstream

CONFIG = """
pipeline = ["usage_probe"]
[upstreams.openai]
url = "{url}"
[routes.openai]
path = "/v1/{{rest*}}"
upstream = "openai"
upstream_path = "/v1/{{rest}}"
"""
KEY = {"Authorization": "Bearer sk-test"}


class UsageProbe(Plugin):
    """Needs usage, and keeps what each request's ``ex.usage`` was at the end."""

    seen: ClassVar[list[Usage | None]] = []

    def needs_usage(self) -> bool:
        return True

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        UsageProbe.seen.append(ex.usage)


class NoNeed(UsageProbe):
    def needs_usage(self) -> bool:
        return False


async def chat(gateway, stream: bool) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    body["stream"] = stream
    async with gateway.request("POST", "/v1/chat/completions", json=body, headers=KEY) as r:
        assert r.status == 200
        await r.read()


async def test_the_upstream_usage_or_an_estimate_fills_exchange_usage(start_gateway, simulator):
    UsageProbe.seen = []
    config = CONFIG.format(url=simulator.openai_url)
    gateway = await start_gateway(config, plugins={"usage_probe": UsageProbe})
    await chat(gateway, stream=False)  # a JSON answer with the upstream's usage
    await chat(gateway, stream=True)  # a stream without one: estimated from its text
    reported, estimated = UsageProbe.seen
    assert reported is not None and not reported.estimated
    assert reported.prompt_tokens > 0 and reported.completion_tokens > 0
    assert estimated is not None and estimated.estimated
    assert estimated.completion_tokens > 0


async def test_nothing_is_metered_when_no_plugin_needs_it(start_gateway, simulator):
    UsageProbe.seen = []
    config = CONFIG.format(url=simulator.openai_url)
    gateway = await start_gateway(config, plugins={"usage_probe": NoNeed})
    await chat(gateway, stream=True)
    assert UsageProbe.seen == [None]


async def test_a_whole_json_answer_without_usage_is_estimated(start_gateway, serve_app):
    """A small answer of known length is metered whole: the upstream's count when its
    top-level ``usage`` has one, else (here: an echo, no usage at all) an estimate."""
    UsageProbe.seen = []
    url = await serve_app(Upstream().app)
    gateway = await start_gateway(CONFIG.format(url=url), plugins={"usage_probe": UsageProbe})
    await chat(gateway, stream=False)
    async with gateway.request("GET", "/v1/gzip", headers=KEY) as r:  # compressed JSON
        assert r.status == 200
        await r.read()
    [echoed, compressed] = UsageProbe.seen
    assert echoed is not None and echoed.estimated
    assert compressed is not None and compressed.estimated
