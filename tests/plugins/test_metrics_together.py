"""The real ``auth``, ``ratelimit`` and ``metrics`` together, through a real gateway.

What ``metrics`` reports (limits hit, credential failovers, tokens) comes through the
typed fields of `Exchange` that the other plugins set: nothing here fakes them.
"""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs

from tests.openai_accounts import ALICE, OpenAIAccounts
from tests.openai_accounts import keys_config as config
from tests.plugins.test_metrics import parse, value

TOGETHER = """
[plugins.ratelimit]
key_prefix = "{prefix}"
[[plugins.ratelimit.rules]]
name = "daily_requests"
requests = 3
period = "day"
routes = ["openai"]
[routes.metrics]
methods = ["GET"]
path = "/metrics"
skip = ["auth", "ratelimit"]
"""


@pytest.fixture
async def gateway(serve_app, start_gateway):
    upstream = await OpenAIAccounts.serve(serve_app)
    upstream.accounts["sk-main"].trouble = "invalid"  # refused: the pool fails over
    text = config(upstream.url) + TOGETHER.format(prefix=f"together-{uuid.uuid4().hex}:")
    text = text.replace(
        'pipeline = ["access_log", "auth"]',
        'pipeline = ["access_log", "metrics", "auth", "ratelimit"]',
    )
    return await start_gateway(text)


async def scrape(gateway) -> dict:
    async with gateway.request("GET", "/metrics") as response:
        assert response.status == 200
        return parse(await response.text())


async def chat(gateway) -> int:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with gateway.request("POST", "/v1/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status


async def test_limits_failovers_and_tokens_reach_metrics_and_the_access_log(gateway):
    before = await scrape(gateway)
    with capture_logs() as logs:
        statuses = [await chat(gateway) for _ in range(4)]
        after = await scrape(gateway)
    assert statuses == [200, 200, 200, 429]

    route = {"route": "openai"}
    rejected = value(after, "gateway_ratelimit_rejections_total", **route, rule="daily_requests")
    assert (
        rejected
        - value(before, "gateway_ratelimit_rejections_total", **route, rule="daily_requests")
        == 1
    )
    failovers = "gateway_credential_failovers_total"
    # sk-main is set aside by the first request: only it fails over.
    assert (
        value(after, failovers, upstream="openai") - value(before, failovers, upstream="openai")
        == 1
    )
    tokens = "gateway_tokens_total"
    for kind, each in (("prompt", 1), ("completion", 3)):  # the upstream's usage, per answer
        labels = {**route, "upstream": "openai", "kind": kind}
        assert value(after, tokens, **labels) - value(before, tokens, **labels) == 3 * each

    lines = [e for e in logs if e["event"] == "request" and e.get("route") == "openai"]
    # (auth runs before ratelimit: the refused request had its credential chosen already.)
    assert [line["credential"] for line in lines] == ["spare"] * 4
    assert [line["limited_by"] for line in lines] == [None, None, None, "daily_requests"]
    assert {line["model"] for line in lines} == {"gpt-4o"}
    assert "sk-main" not in repr(logs) and "sk-spare" not in repr(logs)
