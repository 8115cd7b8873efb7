"""Token quotas that cannot be outrun: reserve before forwarding, settle with the real usage.

A real gateway in front of `UsageUpstream`, whose answers use exactly the
tokens asked for, so that every charge can be checked to the token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.config import structure
from gateway_plugins.ratelimit.config import RuleConfig
from gateway_plugins.ratelimit.memory_store import MemoryStore
from gateway_plugins.ratelimit.redis_store import RedisStore
from gateway_plugins.ratelimit.rules import Rule
from gateway_plugins.ratelimit.store import Check, LimitStore, TokenCharge
from tests.plugins.usage_upstream import UsageUpstream

Start = Callable[..., Awaitable[Any]]


@pytest.fixture
async def quota(start_gateway, serve_app) -> Start:
    """Start a gateway with a daily token quota of ``tokens`` in front of a fresh upstream."""

    async def start(tokens: int, delay: float = 0.0, options: str = "") -> Any:
        upstream = UsageUpstream(delay)
        url = await serve_app(upstream.app)
        gateway = await start_gateway(f"""
pipeline = ["ratelimit"]
[plugins.ratelimit]
store = "memory"
{options}
[[plugins.ratelimit.rules]]
name = "daily-tokens"
key = "client_ip"
tokens = {tokens}
period = "day"
[upstreams.openai]
url = "{url}"
[routes.openai]
path = "/v1/{{rest*}}"
upstream = "openai"
""")
        gateway.upstream = upstream
        return gateway

    return start


def chat(max_tokens: int | None = None, prompt: str = "hi", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {**body, **extra}


async def remaining(gateway: Any) -> int:
    async with gateway.request("GET", "/v1/models") as response:
        assert response.status == 200
        return int(response.headers["X-RateLimit-Remaining"])


async def post(gateway: Any, path: str, body: dict[str, Any]) -> tuple[int, Any, list[Any]]:
    """Status, headers and the parsed ``data:`` of every event (or the JSON body)."""
    async with gateway.request("POST", path, json=body) as response:
        raw = (await response.read()).decode()
        if response.content_type != "text/event-stream":
            return response.status, response.headers, [json.loads(raw)]
    datas = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
    return response.status, response.headers, [d if d == "[DONE]" else json.loads(d) for d in datas]


async def test_thirty_concurrent_streams_cannot_outrun_the_quota(quota):
    gateway = await quota(1000, delay=0.05)  # each stream lasts about half a second
    body = chat(300, stream=True)
    answers = await asyncio.gather(
        *(post(gateway, "/v1/chat/completions", body) for _ in range(30))
    )
    admitted = [a for a in answers if a[0] == 200]
    refused = [a for a in answers if a[0] == 429]
    assert len(admitted) + len(refused) == 30
    # Refused while the others' reservations were in flight: worth retrying soon.
    assert {a[1]["Retry-After"] for a in refused} == {"1"}
    charged = 1000 - await remaining(gateway)
    real = len(admitted) * 301  # each used 1 prompt token and 300 completion tokens
    assert charged == real
    assert charged <= 1000 + 301  # the quota plus one request at most
    status, headers, _ = await post(gateway, "/v1/chat/completions", body)
    assert status == 429  # what is left does not fit a reservation: until midnight UTC
    assert int(headers["Retry-After"]) > 1


async def test_streams_are_charged_their_real_usage_and_the_client_sees_no_extra_chunk(quota):
    gateway = await quota(100_000)
    prompt = " ".join(["word"] * 200)
    for _ in range(3):
        status, _, events = await post(
            gateway, "/v1/chat/completions", chat(5000, prompt, stream=True)
        )
        assert status == 200
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert all(chunk["choices"] for chunk in chunks)  # the usage chunk was removed
        assert not [chunk for chunk in chunks if chunk.get("usage")]
        text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in chunks)
        assert text == "tok " * 5000
    assert 100_000 - await remaining(gateway) == 15_600  # 3 x (200 + 5000)
    asked = [body["stream_options"] for body in gateway.upstream.bodies]
    assert asked == [{"include_usage": True}] * 3


async def test_a_client_that_asked_for_usage_still_gets_it(quota):
    gateway = await quota(100_000)
    body = chat(40, "one two three", stream=True, stream_options={"include_usage": True})
    _, _, events = await post(gateway, "/v1/chat/completions", body)
    assert events[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 40, "total_tokens": 43}
    assert 100_000 - await remaining(gateway) == 43


async def test_legacy_completions_are_asked_for_usage_too(quota):
    gateway = await quota(100_000)
    body = {"model": "m", "prompt": "say it twice", "max_tokens": 70, "stream": True}
    _, _, events = await post(gateway, "/v1/completions", body)
    assert events[-1] == "[DONE]"
    assert all(chunk["choices"] for chunk in events[:-1])
    assert 100_000 - await remaining(gateway) == 73
    assert gateway.upstream.bodies[0]["stream_options"] == {"include_usage": True}


async def test_the_responses_api_is_charged_from_response_completed(quota):
    gateway = await quota(100_000)
    body = {"model": "m", "input": "four words of input", "max_output_tokens": 90, "stream": True}
    _, _, events = await post(gateway, "/v1/responses", body)
    assert events[-1]["type"] == "response.completed"  # passed through untouched
    assert 100_000 - await remaining(gateway) == 94
    assert "stream_options" not in gateway.upstream.bodies[0]


async def test_json_answers_are_charged_their_usage(quota):
    gateway = await quota(100_000)
    _, _, (answer,) = await post(gateway, "/v1/chat/completions", chat(25, "a b c d e"))
    assert answer["usage"]["total_tokens"] == 30
    assert 100_000 - await remaining(gateway) == 30


async def test_a_reservation_holds_while_the_request_runs_and_fits_or_is_refused(quota):
    gateway = await quota(1000, delay=0.2, options="default_max_tokens = 600")
    async with gateway.request("POST", "/v1/chat/completions", json=chat(stream=True)) as response:
        assert response.status == 200
        held = 1000 - int(response.headers["X-RateLimit-Remaining"])
        assert 600 < held < 620  # the default, and the prompt's estimate
        assert await remaining(gateway) == 1000 - held
        status, headers, _ = await post(gateway, "/v1/chat/completions", chat(stream=True))
        assert (status, headers["Retry-After"]) == (429, "1")
        await response.read()
    assert await remaining(gateway) == 1000 - 51  # settled: 1 prompt and 50 completion tokens


async def test_a_client_gone_before_the_usage_keeps_its_whole_reservation(quota):
    gateway = await quota(10_000, delay=0.2)
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            gateway.url + "/v1/chat/completions", json=chat(300, stream=True)
        )
        assert response.status == 200
        held = 10_000 - int(response.headers["X-RateLimit-Remaining"])
        await response.content.readuntil(b"\n\n")
        response.close()  # gone after the first chunk
    for _ in range(100):  # the gateway learns of it and settles
        if await remaining(gateway) == 10_000 - held:
            break
        await asyncio.sleep(0.05)
    assert await remaining(gateway) == 10_000 - held
    assert held > 300


# --- the stores: reserve, refuse, settle (the same in memory and in Redis) -------------


def token_check(limit: int, cost: int, name: str = "tokens") -> Check:
    config, problems = structure({"name": name, "tokens": limit, "period": "day"}, RuleConfig, "$")
    assert problems == []
    return Check(Rule.of(config, 0), f"{name}:ip:1", cost)


@pytest.fixture(params=["memory", "redis"])
async def store(request, start_redis) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    server = await start_redis()
    redis_store = RedisStore(server.url, "t:", timeout=1.0, lease=60.0)
    await redis_store.start()
    yield redis_store
    await redis_store.close()


async def test_a_store_reserves_refuses_and_settles(store: LimitStore) -> None:
    first = await store.acquire([token_check(1000, 400)], "a")
    second = await store.acquire([token_check(1000, 400)], "b")
    assert [first.outcomes[0].remaining, second.outcomes[0].remaining] == [600, 200]
    refused = await store.acquire([token_check(1000, 400)], "c")
    assert not refused.admitted
    # Blocked by reservations that may settle lower: try again in a second.
    assert (refused.outcomes[0].remaining, refused.outcomes[0].retry_after) == (200, 1.0)
    window = first.outcomes[0].window
    assert window.startswith("d")
    await store.settle([], [TokenCharge(token_check(1000, 400), window, 150)], "a")
    assert (await store.acquire([token_check(1000, 0)], "d")).outcomes[0].remaining == 450
    await store.settle([], [TokenCharge(token_check(1000, 400), window, 700)], "b")
    # 850 used: a reservation of 400 can no longer fit today.
    late = await store.acquire([token_check(1000, 400)], "e")
    assert not late.admitted
    assert late.outcomes[0].retry_after > 1.0  # until the window ends
    small = await store.acquire([token_check(1000, 150)], "f")
    assert small.admitted and small.outcomes[0].remaining == 0


async def test_a_reservation_of_nothing_still_needs_a_token_left(store: LimitStore) -> None:
    whole = await store.acquire([token_check(100, 100)], "a")
    assert whole.admitted and whole.outcomes[0].remaining == 0
    window = whole.outcomes[0].window
    assert not (await store.acquire([token_check(100, 0)], "b")).admitted
    await store.settle([], [TokenCharge(token_check(100, 100), window, 99)], "a")
    assert (await store.acquire([token_check(100, 0)], "c")).admitted


async def test_a_reservation_of_an_ended_window_is_forgotten(store: LimitStore) -> None:
    decision = await store.acquire([token_check(100, 50)], "a")
    await store.settle([], [TokenCharge(token_check(100, 50), "d20000101", 80)], "a")
    # Yesterday's charge changes nothing today (today's reservation still holds).
    after = await store.acquire([token_check(100, 0)], "b")
    assert after.outcomes[0].remaining == 50
    assert decision.outcomes[0].window != "d20000101"
