"""The simulated upstreams in `gateway.testing`: real servers, real HTTP, no mocks."""

from __future__ import annotations

import base64
import itertools
import json
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.testing import (
    RecordedRequest,
    Recorder,
    chatgpt_app,
    openai_app,
    start_simulator,
)
from gateway.testing.chatgpt_stream import CONTINUATION, REWRITE_PARTS
from gateway.testing.server import Simulator

AUTH = {"Authorization": "Bearer test-token"}
ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def conversation_body(prompt: str = "hi there", **extra: Any) -> dict[str, Any]:
    """A ChatGPT ``action: next`` request as the gateway sends it."""
    return {
        "action": "next",
        "messages": [
            {
                "id": "m-1",
                "author": {"role": "user"},
                "content": {"content_type": "text", "parts": [prompt]},
                "metadata": {},
            }
        ],
        "model": "text-davinci-002-render-sha",
        "parent_message_id": "p-1",
        "conversation_id": None,
        **extra,
    }


def parse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """Split an event-stream body into (event name, data) pairs; comments are skipped."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((name, "\n".join(data)))
    return events


def messages(events: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    """The message events (JSON with a non-null ``message``), in order."""
    out = []
    for name, data in events:
        if name is None and data != "[DONE]":
            payload = json.loads(data)
            if payload.get("message"):
                out.append(payload)
    return out


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = await start_simulator()
    yield simulator
    await simulator.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def converse(
    http: aiohttp.ClientSession, sim: Simulator, body: dict[str, Any], **headers: str
) -> tuple[aiohttp.ClientResponse, list[tuple[str | None, str]]]:
    async with http.post(
        f"{sim.chatgpt_url}/conversation", json=body, headers={**AUTH, **headers}
    ) as resp:
        return resp, parse_events(await resp.read())


# --- the ChatGPT conversation stream ---------------------------------------------------


async def test_conversation_stream_has_the_chatgpt_shape(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    resp, events = await converse(http, sim, conversation_body("hi there"))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert events[-1] == (None, "[DONE]")
    assert ("ping", "{}") in events

    msgs = messages(events)
    texts = [m["message"]["content"]["parts"][0] for m in msgs]
    expected = "You said: hi there This is a simulated answer."
    words = expected.split()
    assert texts[:-1] == [" ".join(words[: i + 1]) for i in range(len(words))]
    for m in msgs[:-1]:
        assert m["message"]["status"] == "in_progress"
        assert m["message"]["end_turn"] is None
        assert m["message"]["author"]["role"] == "assistant"
        assert m["message"]["content"]["content_type"] == "text"
        assert m["error"] is None
    assert len({m["conversation_id"] for m in msgs}) == 1
    assert len({m["message"]["id"] for m in msgs}) == 1

    final = msgs[-1]["message"]
    assert final["content"]["parts"] == [expected]
    assert final["status"] == "finished_successfully"
    assert final["end_turn"] is True
    assert final["metadata"]["finish_details"]["type"] == "stop"

    payloads = [json.loads(data) for name, data in events[:-1] if name is None]
    kinds = [p.get("type") or (p["message"] or {}).get("status") for p in payloads]
    assert kinds.index("moderation") == kinds.index("finished_successfully") - 1
    assert payloads[kinds.index("moderation")]["moderation_response"]["flagged"] is False
    assert events[0][1].startswith('{"message": {"id": ')  # ChatGPT's spaced JSON

    assert sim.recorder.last.path == "/backend-api/conversation"
    assert sim.recorder.last.json["messages"][0]["content"]["parts"] == ["hi there"]


async def test_conversation_keeps_the_given_conversation_id(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    _, events = await converse(http, sim, conversation_body(conversation_id="c-42"))
    msgs = messages(events)
    assert {m["conversation_id"] for m in msgs} == {"c-42"}
    assert msgs[-1]["message"]["metadata"]["parent_id"] == "p-1"


async def test_delay_sends_each_event_before_the_next_is_made(
    http: aiohttp.ClientSession,
) -> None:
    # With an hour between events, the first one can only arrive if it is streamed.
    async with (
        await start_simulator(delay=3600) as sim,
        http.post(
            f"{sim.chatgpt_url}/conversation", json=conversation_body(), headers=AUTH
        ) as resp,
    ):
        first = await resp.content.readuntil(b"\n\n")
        message = json.loads(first.removeprefix(b"data: "))["message"]
        assert message["content"]["parts"] == ["You"]
        assert resp.content.read_nowait() == b""
        assert not resp.content.at_eof()
    # Leaving the block disconnected the client, which cancelled the hour-long wait.


async def test_small_delay_keeps_events_in_order(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(chatgpt_app(delay=0.01))
    body = conversation_body("a b")
    resp = await client.post("/backend-api/conversation", json=body, headers=AUTH)
    events = parse_events(await resp.read())
    texts = [m["message"]["content"]["parts"][0] for m in messages(events)]
    words = ["You", "said:", "a", "b", "This", "is", "a", "simulated", "answer."]
    assert texts == [" ".join(words[: i + 1]) for i in range(len(words))] + [" ".join(words)]
    assert [name for name, _ in events].count("ping") == 1
    assert events[-1] == (None, "[DONE]")


async def test_words_fixes_the_answer_length(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(chatgpt_app(words=50))
    resp = await client.post("/backend-api/conversation", json=conversation_body(), headers=AUTH)
    msgs = messages(parse_events(await resp.read()))
    assert len(msgs) == 51  # one per word, then the final message
    assert len(msgs[-1]["message"]["content"]["parts"][0].split()) == 50


# --- failure modes -------------------------------------------------------------------------


async def test_fail_error_event(sim: Simulator, http: aiohttp.ClientSession) -> None:
    resp, events = await converse(http, sim, conversation_body(), **{"X-Sim-Fail": "error-event"})
    assert resp.status == 200
    assert [json.loads(events[0][1]), events[1]] == [
        {"message": None, "conversation_id": None, "error": "Something went wrong"},
        (None, "[DONE]"),
    ]
    assert len(events) == 2


async def test_fail_max_tokens(sim: Simulator, http: aiohttp.ClientSession) -> None:
    _, events = await converse(http, sim, conversation_body(), **{"X-Sim-Fail": "max-tokens"})
    final = messages(events)[-1]["message"]
    assert final["metadata"]["finish_details"] == {"type": "max_tokens"}
    assert final["end_turn"] is False
    assert events[-1] == (None, "[DONE]")


async def test_continue_goes_on_from_the_last_message_of_an_answer(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    _, events = await converse(http, sim, conversation_body(), **{"X-Sim-Fail": "max-tokens"})
    final = messages(events)[-1]
    follow_up = {
        "action": "continue",
        "conversation_id": final["conversation_id"],
        "parent_message_id": final["message"]["id"],
        "model": "text-davinci-002-render-sha",
    }
    resp, events = await converse(http, sim, follow_up)
    assert resp.status == 200
    continued = messages(events)[-1]["message"]
    assert continued["content"]["parts"] == [CONTINUATION]  # the new text only
    assert continued["id"] != final["message"]["id"]
    assert continued["metadata"]["finish_details"] == {"type": "stop"}
    wrong_parent = {**follow_up, "parent_message_id": "elsewhere"}
    assert (await converse(http, sim, wrong_parent))[0].status == 400
    unknown = {**follow_up, "conversation_id": "never-answered"}
    assert (await converse(http, sim, unknown))[0].status == 404


async def test_fail_die_tears_the_stream(sim: Simulator, http: aiohttp.ClientSession) -> None:
    received = b""
    async with http.post(
        f"{sim.chatgpt_url}/conversation",
        json=conversation_body(),
        headers={**AUTH, "X-Sim-Fail": "die"},
    ) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += chunk
    events = parse_events(received)
    assert messages(events)
    assert (None, "[DONE]") not in events
    assert all(m["message"]["status"] == "in_progress" for m in messages(events))


async def test_fail_rewrite_changes_and_shrinks_the_text(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    _, events = await converse(http, sim, conversation_body(), **{"X-Sim-Fail": "rewrite"})
    texts = [m["message"]["content"]["parts"][0] for m in messages(events)]
    assert texts == [*REWRITE_PARTS, REWRITE_PARTS[-1]]
    pairs = list(itertools.pairwise(texts))
    assert any(not new.startswith(old) and len(new) > len(old) for old, new in pairs)
    assert any(len(new) < len(old) for old, new in pairs)
    assert texts[-1] == "Hello, world!"


@pytest.mark.parametrize(
    "body",
    [
        conversation_body(sim_fail="max-tokens"),
        conversation_body("please [sim-fail:max-tokens] now"),
    ],
    ids=["body-field", "prompt-marker"],
)
async def test_fail_mode_from_body_or_prompt(
    sim: Simulator, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    _, events = await converse(http, sim, body)
    assert messages(events)[-1]["message"]["metadata"]["finish_details"]["type"] == "max_tokens"


async def test_unknown_fail_mode_is_a_400(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{sim.chatgpt_url}/conversation",
        json=conversation_body(),
        headers={**AUTH, "X-Sim-Fail": "explode"},
    ) as resp:
        assert resp.status == 400
        assert "explode" in (await resp.json())["detail"]


# --- the OpenAI API ------------------------------------------------------------------------


async def test_openai_stream_chunks_and_usage(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello world"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post(f"{sim.openai_url}/v1/chat/completions", json=body, headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = parse_events(await resp.read())
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "You said: hello world This is a simulated answer."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}


async def test_openai_stream_without_usage(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(openai_app())
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "stream": True}
    resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    chunks = [json.loads(d) for _, d in parse_events(await resp.read())[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


async def test_openai_completion_and_max_tokens(aiohttp_client: ClientFactory) -> None:
    recorder = Recorder()
    client = await aiohttp_client(openai_app(recorder))
    content = [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": content}]}
    resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    answer = await resp.json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "gpt-4"
    choice = answer["choices"][0]
    assert choice["message"]["content"] == "You said: one two three This is a simulated answer."
    assert choice["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13}

    resp = await client.post("/v1/chat/completions", json={**body, "max_tokens": 2}, headers=AUTH)
    answer = await resp.json()
    assert answer["choices"][0]["message"]["content"] == "You said:"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert recorder.last.json["max_tokens"] == 2


async def test_openai_bad_requests(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(openai_app())
    resp = await client.post("/v1/chat/completions", data=b"{nope", headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"
    resp = await client.post("/v1/chat/completions", json={"model": "gpt-4"}, headers=AUTH)
    assert resp.status == 400
    resp = await client.get("/v1/nothing-here", headers=AUTH)
    assert resp.status == 404
    assert "message" in (await resp.json())["error"]


async def test_openai_models_and_embeddings(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(openai_app())
    models = await (await client.get("/v1/models", headers=AUTH)).json()
    assert models["object"] == "list"
    assert {"id": "gpt-4", "object": "model", "created": 1686935002, "owned_by": "openai"} in (
        models["data"]
    )
    assert (await client.get("/v1/models/gpt-4", headers=AUTH)).status == 200
    assert (await client.get("/v1/models/nope", headers=AUTH)).status == 404

    body = {"model": "text-embedding-3-small", "input": ["a b", "c"]}
    floats = await (await client.post("/v1/embeddings", json=body, headers=AUTH)).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vector = floats["data"][0]["embedding"]
    assert len(vector) == 8 and all(-1 <= v <= 1 for v in vector)

    body = {**body, "encoding_format": "base64"}
    packed = await (await client.post("/v1/embeddings", json=body, headers=AUTH)).json()
    decoded = struct.unpack("<8f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector, abs=1e-6)


# --- the other ChatGPT endpoints ----------------------------------------------------------


async def test_chatgpt_rest_endpoints(sim: Simulator, http: aiohttp.ClientSession) -> None:
    base = sim.chatgpt_url
    async with http.get(f"{base}/conversations?offset=40&limit=5", headers=AUTH) as resp:
        page = await resp.json()
    assert (page["offset"], page["limit"], page["total"], len(page["items"])) == (40, 5, 42, 2)
    async with http.get(f"{base}/conversations", headers=AUTH) as resp:
        page = await resp.json()
    assert (page["offset"], page["limit"], len(page["items"])) == (0, 20, 20)
    async with http.get(f"{base}/conversations?limit=x", headers=AUTH) as resp:
        assert resp.status == 422
        assert "detail" in await resp.json()

    async with http.get(f"{base}/conversation/abc", headers=AUTH) as resp:
        conversation = await resp.json()
    assert conversation["conversation_id"] == "abc"
    assert conversation["mapping"]

    for url, body in [(f"{base}/conversation/abc", {"title": "t"}), (f"{base}/conversations", {})]:
        async with http.patch(url, json=body, headers=AUTH) as resp:
            assert await resp.json() == {"success": True}

    async with http.post(
        f"{base}/conversation/gen_title/abc", json={"message_id": "m"}, headers=AUTH
    ) as resp:
        assert isinstance((await resp.json())["title"], str)

    feedback = {"message_id": "m", "conversation_id": "c", "rating": "thumbsUp"}
    async with http.post(
        f"{base}/conversation/message_feedback", json=feedback, headers=AUTH
    ) as resp:
        assert (await resp.json()).items() >= feedback.items()

    async with http.get(f"{base}/models", headers=AUTH) as resp:
        slugs = [m["slug"] for m in (await resp.json())["models"]]
    assert slugs == ["text-davinci-002-render-sha", "gpt-4"]

    async with http.get(f"{base}/no/such/thing", headers=AUTH) as resp:
        assert resp.status == 404
        assert "detail" in await resp.json()


# --- auth, X-Sim-Status and recording ------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwdw==", "Bearer ", "token"])
async def test_401_without_a_bearer_token(
    sim: Simulator, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with http.get(f"{sim.chatgpt_url}/models", headers=headers) as resp:
        assert resp.status == 401
        assert isinstance((await resp.json())["detail"], str)
    async with http.post(f"{sim.openai_url}/v1/chat/completions", json={}, headers=headers) as resp:
        assert resp.status == 401
        error = (await resp.json())["error"]
        assert {"message", "type", "code"} <= error.keys()
        assert error["code"] == "invalid_api_key"


async def test_x_sim_status(sim: Simulator, http: aiohttp.ClientSession) -> None:
    headers = {**AUTH, "X-Sim-Status": "429"}
    async with http.post(
        f"{sim.chatgpt_url}/conversation", json=conversation_body(), headers=headers
    ) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert await resp.json() == {"detail": "simulated 429"}
    async with http.get(f"{sim.openai_url}/v1/models", headers=headers) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["message"] == "simulated 429"
    # The status wins over the missing credential, so failover tests can ask for a 401 too.
    async with http.get(f"{sim.chatgpt_url}/models", headers={"X-Sim-Status": "503"}) as resp:
        assert resp.status == 503
        assert "Retry-After" not in resp.headers
    async with http.get(f"{sim.chatgpt_url}/models", headers={"X-Sim-Status": "200"}) as resp:
        assert resp.status == 400


async def test_sim_status_prompt_marker(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{sim.chatgpt_url}/conversation",
        json=conversation_body("[sim-status:502]"),
        headers=AUTH,
    ) as resp:
        assert resp.status == 502
        assert await resp.json() == {"detail": "simulated 502"}


async def test_recorder_keeps_every_request(sim: Simulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sim.chatgpt_url}/models"):  # no credential: recorded all the same
        pass
    url = f"{sim.chatgpt_url}/conversation/a%2Fb?x=1&x=2&y=3"
    async with http.patch(url, json={"title": "t"}, headers={**AUTH, "X-Test": "v"}):
        pass
    async with http.post(f"{sim.openai_url}/v1/embeddings", data=b"not json", headers=AUTH):
        pass

    assert len(sim.recorder) == 3
    first, second, third = sim.recorder.requests
    assert (first.method, first.path, first.json) == ("GET", "/backend-api/models", None)
    assert isinstance(second, RecordedRequest)
    assert (second.method, second.path) == ("PATCH", "/backend-api/conversation/a%2Fb")
    assert second.query == {"x": "1", "y": "3"}
    assert second.headers["x-test"] == "v"
    assert second.headers["authorization"] == "Bearer test-token"
    assert second.json == {"title": "t"} == second.json_body
    assert json.loads(second.body) == {"title": "t"}
    assert (third.body, third.json) == (b"not json", None)
    assert sim.recorder.last is third
    assert sim.recorder.to("/v1/embeddings", "post") == [third]
    sim.recorder.clear()
    with pytest.raises(LookupError):
        _ = sim.recorder.last


async def test_simulator_urls(sim: Simulator) -> None:
    assert sim.url == f"http://127.0.0.1:{sim.port}"
    assert sim.chatgpt_url == f"{sim.url}/backend-api"
    assert sim.openai_url == sim.url


def test_import_is_dependency_free() -> None:
    code = (
        "import sys, gateway.testing; "
        "print(sorted(m for m in sys.modules if m.startswith('gateway') "
        "and not m.startswith('gateway.testing')))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "['gateway']"


async def test_the_openai_sdk_understands_the_simulator(sim: Simulator) -> None:
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=f"{sim.openai_url}/v1")
    try:
        messages = [{"role": "user", "content": "hello"}]
        completion = await client.chat.completions.create(model="gpt-4o", messages=messages)
        assert (
            completion.choices[0].message.content == "You said: hello This is a simulated answer."
        )
        assert completion.usage is not None and completion.usage.completion_tokens == 8

        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            usage = chunk.usage or usage
        assert "".join(parts) == completion.choices[0].message.content
        assert usage is not None and usage.total_tokens == 9

        vectors = await client.embeddings.create(model="text-embedding-3-small", input="x")
        assert len(vectors.data[0].embedding) == 8
        assert "gpt-4o" in [m.id async for m in client.models.list()]

        with pytest.raises(openai.RateLimitError):
            no_retry = client.with_options(max_retries=0)
            await no_retry.models.list(extra_headers={"X-Sim-Status": "429"})
    finally:
        await client.close()
