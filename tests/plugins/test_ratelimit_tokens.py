"""Counting an answer's tokens for ``ratelimit``'s token quotas: usage first, else text;
then settled in a gateway in front of the simulated OpenAI and ChatGPT."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.api import SSEEvent
from gateway.testing import start_simulator
from gateway.usage import MAX_BODY, TokenMeter, estimate_tokens, prompt_tokens, usage_tokens


def streamed(meter: TokenMeter, *events: Any) -> TokenMeter:
    for event in events:
        meter.event(SSEEvent(data=event if isinstance(event, str) else json.dumps(event)))
    return meter


def delta(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": content}}]}


def chatgpt(text: str, message_id: str = "m1", role: str = "assistant") -> dict[str, Any]:
    return {
        "message": {
            "id": message_id,
            "author": {"role": role},
            "content": {"content_type": "text", "parts": [text]},
        }
    }


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, 7),
        ({"prompt_tokens": 3, "completion_tokens": 4}, 7),
        ({"prompt_tokens": 9}, 9),
        ({"input_tokens": 2, "output_tokens": 5}, 7),
        ({"total_tokens": True}, None),
        ({}, None),
        (None, None),
        ("12", None),
    ],
)
def test_usage_objects(usage: Any, tokens: int | None) -> None:
    assert usage_tokens(usage) == tokens


def test_estimate_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [estimate_tokens(n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_json_usage_is_read_across_chunks() -> None:
    body = json.dumps(
        {"choices": [{"message": {"content": "x" * 400}}], "usage": {"total_tokens": 42}}
    ).encode()
    meter = TokenMeter("application/json; charset=utf-8")
    for i in range(0, len(body), 7):
        meter.feed(body[i : i + 7])
    meter.finish()
    assert meter.tokens == 42


def test_gzipped_json_is_decompressed() -> None:
    body = gzip.compress(json.dumps({"usage": {"total_tokens": 17}}).encode())
    meter = TokenMeter("application/json", "gzip")
    meter.feed(body[:10])
    meter.feed(body[10:])
    meter.finish()
    assert meter.tokens == 17


def test_json_without_usage_counts_the_answer_text() -> None:
    meter = TokenMeter("application/json")
    meter.feed(json.dumps({"choices": [{"message": {"content": "y" * 41}}]}).encode())
    meter.finish()
    assert meter.tokens == 11


def test_a_json_body_over_the_limit_is_given_up() -> None:
    meter = TokenMeter("application/json")
    padding = " " * MAX_BODY
    meter.feed(b'{"usage": {"total_tokens": 5}}')
    meter.feed(padding.encode())
    meter.finish()
    assert meter.tokens == 0


def test_non_json_bodies_are_not_buffered() -> None:
    meter = TokenMeter("text/plain")
    meter.feed(b'{"usage": {"total_tokens": 5}}')
    meter.finish()
    assert meter.tokens == 0


def test_the_streamed_usage_chunk_wins_over_counted_text() -> None:
    meter = streamed(
        TokenMeter("text/event-stream"),
        delta("Hello there, friend"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}},
        "[DONE]",
    )
    assert meter.tokens == 8


def test_openai_deltas_are_counted_when_no_usage_comes() -> None:
    meter = streamed(
        TokenMeter("text/event-stream"),
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        delta("abcde"),
        delta("fgh"),
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]},
        "[DONE]",
    )
    assert meter.tokens == estimate_tokens(10)


def test_chatgpt_parts_are_cumulative_so_only_the_last_counts() -> None:
    meter = streamed(
        TokenMeter("text/event-stream"),
        chatgpt("Hi", role="user", message_id="u"),
        chatgpt("Hello"),
        chatgpt("Hello wor"),
        chatgpt("Hello, world!"),
        {"type": "moderation"},
        "[DONE]",
    )
    assert meter.tokens == estimate_tokens(len("Hello, world!"))


# --- settled in a gateway, against the simulator ----------------------------------------


SIMULATOR_AUTH = {"Authorization": "Bearer sk-simulated"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count my tokens"}]}


@pytest.fixture
async def simulated(start_gateway) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start a gateway with a token quota (``tokens`` a day) in front of the simulator."""
    simulator = await start_simulator()

    async def start(tokens: int = 1000, stream_usage: bool = True) -> Any:
        gateway = await start_gateway(f"""
pipeline = ["ratelimit"]
[plugins.ratelimit]
stream_usage = {json.dumps(stream_usage)}
[[plugins.ratelimit.rules]]
name = "daily-tokens"
key = "client_ip"
tokens = {tokens}
period = "day"
[upstreams.openai]
url = "{simulator.openai_url}"
[upstreams.chatgpt]
url = "{simulator.chatgpt_url}"
[routes.conversation]
path = "/conversation"
upstream = "chatgpt"
[routes.openai]
path = "/v1/{{rest*}}"
upstream = "openai"
""")
        # One connection: the gateway handles each request once the one before it
        # has ended and been settled.
        await gateway.session.close()
        gateway.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1), headers=SIMULATOR_AUTH
        )
        return gateway

    yield start
    await simulator.close()


async def remaining(gateway: Any) -> int:
    async with gateway.request("GET", "/v1/models") as response:
        assert response.status == 200
        return int(response.headers["X-RateLimit-Remaining"])


async def stream_events(gateway: Any, path: str, body: dict[str, Any]) -> list[Any]:
    async with gateway.request("POST", path, json=body) as response:
        assert response.status == 200
        text = (await response.read()).decode()
    datas = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    return [json.loads(d) for d in datas if d != "[DONE]"]


async def test_tokens_are_settled_from_the_json_usage(simulated):
    gateway = await simulated()
    assert await remaining(gateway) == 1000
    async with gateway.request("POST", "/v1/chat/completions", json=CHAT) as response:
        usage = (await response.json())["usage"]
    assert await remaining(gateway) == 1000 - usage["total_tokens"]


async def test_tokens_are_settled_from_the_streamed_usage_chunk(simulated):
    gateway = await simulated()
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = await stream_events(gateway, "/v1/chat/completions", body)
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] > 0
    assert await remaining(gateway) == 1000 - usage["total_tokens"]


async def test_a_stream_whose_client_asked_no_usage_is_charged_its_usage(simulated):
    gateway = await simulated()
    chunks = await stream_events(gateway, "/v1/chat/completions", {**CHAT, "stream": True})
    assert all(c["choices"] for c in chunks)  # the usage chunk the gateway asked for is gone
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    # The simulator counts words: three in the prompt, and the answer's.
    assert await remaining(gateway) == 1000 - 3 - len(text.split())


async def test_without_stream_usage_tokens_are_estimated_from_the_text(simulated):
    gateway = await simulated(stream_usage=False)
    chunks = await stream_events(gateway, "/v1/chat/completions", {**CHAT, "stream": True})
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert len(text) > 20
    expected = prompt_tokens(CHAT) + math.ceil(len(text) / 4)
    assert await remaining(gateway) == 1000 - expected


async def test_tokens_are_estimated_from_the_final_chatgpt_text(simulated):
    gateway = await simulated()
    body = {
        "action": "next",
        "messages": [{"id": "m", "author": {"role": "user"}, "content": {"parts": ["hi there"]}}],
        "parent_message_id": "p",
    }
    events = await stream_events(gateway, "/conversation", body)
    final = [e for e in events if isinstance(e.get("message"), dict)][-1]
    text = final["message"]["content"]["parts"][0]
    expected = prompt_tokens(body) + math.ceil(len(text) / 4)
    assert await remaining(gateway) == 1000 - expected


async def test_an_exhausted_token_quota_answers_429(simulated):
    gateway = await simulated(tokens=5)
    async with gateway.request("POST", "/v1/chat/completions", json=CHAT) as response:
        assert response.status == 200  # alone in an unused window; it overshoots
        assert (await response.json())["usage"]["total_tokens"] > 5
    async with gateway.request("GET", "/v1/models") as response:
        assert response.status == 429
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(response.headers["Retry-After"]) <= 86400  # until midnight UTC
        assert "'daily-tokens'" in (await response.json())["error"]["message"]
