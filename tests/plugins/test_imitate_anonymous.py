"""``imitate`` never serves the server's ChatGPT token to a client no auth plugin identified.

The gateway starts with ``IMITATE_ACCESS_TOKEN`` and no client keys (as a
go-chatgpt-api ``.env`` has it): one warning, and anonymous requests get 401
saying how to enable them.  The rule holds per route, with the route's real
pipeline, and per request.  The upstream is the simulated ChatGPT backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

from gateway.keys import key_digest
from gateway.testing import Simulator, start_simulator

SERVER_TOKEN = "server-chatgpt-token"
CHAT = "/imitate/v1/chat/completions"
BODY = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with await start_simulator() as simulator:
        yield simulator


def sent_tokens(sim: Simulator) -> list[str]:
    return [
        r.headers.get("Authorization", "") for r in sim.recorder.to("/backend-api/conversation")
    ]


def keyed_config(url: str, route_extra: str) -> str:
    return f"""
pipeline = ["access_log", "auth"]
[plugins.auth]
mode = "keys"
keys.alice = {{ sha256 = "{key_digest("alice-key")}" }}
[plugins.imitate]
access_token = "{SERVER_TOKEN}"
[upstreams.chatgpt]
url = "{url}"
[routes.imitate_chat]
methods = ["POST"]
path = "/imitate/v1/chat/completions"
upstream = "chatgpt"
pipeline = ["imitate"]
{route_extra}
"""


async def post(gateway: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with gateway.request("POST", CHAT, json=BODY, headers=headers or {}) as response:
        return response.status, await response.json()


async def test_the_shipped_config_starts_with_a_server_token_and_no_keys(sim, start_gateway):
    env = {"IMITATE_ACCESS_TOKEN": SERVER_TOKEN, "CHATGPT_BASE_URL": sim.chatgpt_url}
    with capture_logs() as logs:
        gateway = await start_gateway(None, env)  # the default config: it used to refuse
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and "imitate_chat" in warnings[0]["routes"]
    assert 'mode = "keys"' in warnings[0]["event"] and "allow_anonymous" in warnings[0]["event"]
    assert SERVER_TOKEN not in repr(logs)
    status, body = await post(gateway)
    assert status == 401
    message = body["error"]["message"]
    assert 'mode = "keys"' in message and "allow_anonymous = true" in message
    assert sent_tokens(sim) == []
    # A client that brings its own ChatGPT token is served with it.
    client = openai.AsyncOpenAI(base_url=gateway.url + "/imitate/v1", api_key="own", max_retries=0)
    await client.chat.completions.create(**BODY)
    assert sent_tokens(sim) == ["Bearer own"]


@pytest.mark.parametrize(
    "route_extra",
    ['skip = ["auth"]', '[routes.imitate_chat.plugins.auth]\nmode = "passthrough"'],
    ids=["auth skipped", "auth passthrough on the route"],
)
async def test_keys_mode_elsewhere_does_not_open_a_route_without_it(
    sim, start_gateway, route_extra
):
    with capture_logs() as logs:
        gateway = await start_gateway(keyed_config(sim.chatgpt_url, route_extra))
    warning = next(e for e in logs if e["log_level"] == "warning")
    assert warning["routes"] == ["imitate_chat"]
    status, body = await post(gateway)
    assert status == 401 and "allow_anonymous = true" in body["error"]["message"]
    assert sent_tokens(sim) == []


async def test_identified_clients_get_the_server_token(sim, start_gateway):
    with capture_logs() as logs:
        gateway = await start_gateway(keyed_config(sim.chatgpt_url, ""))
    assert not [e for e in logs if e["log_level"] == "warning"]
    status, _ = await post(gateway, {"Authorization": "Bearer alice-key"})
    assert status == 200 and sent_tokens(sim) == [f"Bearer {SERVER_TOKEN}"]
    assert (await post(gateway))[0] == 401  # no key: auth refuses before imitate
