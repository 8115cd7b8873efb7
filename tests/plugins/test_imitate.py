"""``imitate`` end to end: the official OpenAI SDK against a gateway in front of ChatGPT.

The upstream is the simulated ChatGPT backend (`gateway.testing`), which answers
``You said: <prompt> This is a simulated answer.``, one more word per event, and
fails on cue (``[sim-fail:MODE]`` and ``[sim-status:NNN]`` in the prompt).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from yarl import URL

from gateway.config import GatewayConfig, RouteConfig, UpstreamConfig
from gateway.errors import BadGateway
from gateway.keys import key_digest
from gateway.plugin import Exchange
from gateway.testing import Simulator, start_simulator
from gateway.testing.chatgpt_stream import REWRITE_PARTS
from gateway.testing.sse import encode_event
from gateway.testing.text import answer_text
from gateway_plugins.imitate.plugin import Imitate

MODELS = '{ "gpt-3.5*" = "text-davinci-002-render-sha", "gpt-4*" = "gpt-4" }'
ROUTES = """
[routes.imitate_chat]
methods = ["POST"]
path = "/imitate/v1/chat/completions"
upstream = "chatgpt"
upstream_path = "/conversation"
pipeline = ["imitate"]

[routes.imitate_models]
methods = ["GET"]
path = "/imitate/v1/models"
upstream = "chatgpt"
upstream_path = "/models"
pipeline = ["imitate"]
"""
CLIENT_TOKEN = "client-chatgpt-token"
SERVER_TOKEN = "server-chatgpt-token"
# A guard against hangs, never a measurement: every call here ends in milliseconds.
HANG_GUARD = 30


def config(chatgpt_url: str, imitate: str = "", auth: str = 'mode = "passthrough"') -> str:
    return f"""
pipeline = ["access_log", "auth"]
[plugins.auth]
{auth}
[plugins.imitate]
models = {MODELS}
{imitate}
[upstreams.chatgpt]
url = "{chatgpt_url}"
{ROUTES}
"""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with await start_simulator() as simulator:
        yield simulator


@pytest.fixture
async def gateway(sim: Simulator, start_gateway: Any) -> Any:
    return await start_gateway(config(sim.chatgpt_url), {})


def client(gateway: Any, api_key: str = CLIENT_TOKEN) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=gateway.url + "/imitate/v1", api_key=api_key, max_retries=0, timeout=HANG_GUARD
    )


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def stream_text(gateway: Any, prompt: str, **kwargs: Any) -> tuple[str, list[Any]]:
    """Stream an answer with the SDK; return the text it assembles and every chunk."""
    stream = await client(gateway).chat.completions.create(
        model="gpt-4o", messages=user(prompt), stream=True, **kwargs
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# --- answers ------------------------------------------------------------------------------


async def test_non_streaming_answer(gateway: Any, sim: Simulator) -> None:
    completion = await client(gateway).chat.completions.create(
        model="gpt-3.5-turbo",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-3.5-turbo"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == answer_text("Hello there")
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )

    sent = sim.recorder.last
    assert (sent.method, sent.path) == ("POST", "/backend-api/conversation")
    assert sent.headers["Authorization"] == f"Bearer {CLIENT_TOKEN}"
    assert sent.headers["Accept"] == "text/event-stream"
    assert sent.headers["Accept-Encoding"] == "identity"
    assert not [h for h in sent.headers if h.lower().startswith("x-stainless")]
    body = sent.json_body
    assert body["action"] == "next"
    assert body["model"] == "text-davinci-002-render-sha"
    assert body["history_and_training_disabled"] is True
    assert "conversation_id" not in body
    assert [(m["author"]["role"], m["content"]["parts"]) for m in body["messages"]] == [
        ("system", ["Be brief."]),
        ("user", ["Hello there"]),
    ]


async def test_streaming_answer(gateway: Any, sim: Simulator) -> None:
    text, chunks = await stream_text(gateway, "Tell me a story")
    assert text == answer_text("Tell me a story")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert {(c.id, c.created, c.model, c.object) for c in chunks} == {
        (chunks[0].id, chunks[0].created, "gpt-4o", "chat.completion.chunk")
    }
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "stop"]
    assert sim.recorder.last.json_body["model"] == "gpt-4"


async def test_streaming_usage_on_request(gateway: Any) -> None:
    text, chunks = await stream_text(gateway, "Count me", stream_options={"include_usage": True})
    assert text == answer_text("Count me")
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    assert all(c.usage is None for c in body)


async def test_array_of_text_parts(gateway: Any, sim: Simulator) -> None:
    completion = await client(gateway).chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Parts work"}]}],
    )
    assert completion.choices[0].message.content == answer_text("Parts work")
    assert sim.recorder.last.json_body["messages"][0]["content"]["parts"] == ["Parts work"]


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_finishes_with_length(gateway: Any, stream: bool) -> None:
    prompt = "Long one [sim-fail:max-tokens]"
    if stream:
        text, chunks = await stream_text(gateway, prompt)
        finish = chunks[-1].choices[0].finish_reason
    else:
        completion = await client(gateway).chat.completions.create(
            model="gpt-4", messages=user(prompt)
        )
        text, finish = (
            completion.choices[0].message.content or "",
            completion.choices[0].finish_reason,
        )
    assert text == answer_text(prompt)
    assert finish == "length"


async def test_rewritten_text(gateway: Any) -> None:
    prompt = "Rewrite [sim-fail:rewrite]"
    text, _ = await stream_text(gateway, prompt)
    # What was sent stays; the stream goes on with the text's growth (see DeltaTracker).
    assert text == "Hello wor!!!"
    completion = await client(gateway).chat.completions.create(model="gpt-4", messages=user(prompt))
    assert completion.choices[0].message.content == REWRITE_PARTS[-1]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "error", "status"),
    [
        (400, openai.BadRequestError, 400),
        (401, openai.AuthenticationError, 401),
        (403, openai.PermissionDeniedError, 403),
        (404, openai.NotFoundError, 404),
        (429, openai.RateLimitError, 429),
        (500, openai.InternalServerError, 502),
        (503, openai.InternalServerError, 502),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_become_sdk_errors(
    gateway: Any, upstream: int, error: type[openai.APIStatusError], status: int, stream: bool
) -> None:
    with pytest.raises(error) as caught:
        await client(gateway).chat.completions.create(
            model="gpt-4", messages=user(f"x [sim-status:{upstream}]"), stream=stream
        )
    assert caught.value.status_code == status
    assert caught.value.message.endswith(f"ChatGPT answered {upstream}: simulated {upstream}")
    assert caught.value.response.headers["Content-Type"] == "application/json"
    if upstream == 429:
        assert caught.value.response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("stream", [False, True])
async def test_error_event_before_any_text_is_502(gateway: Any, stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client(gateway).chat.completions.create(
            model="gpt-4", messages=user("x [sim-fail:error-event]"), stream=stream
        )
    assert caught.value.status_code == 502
    assert caught.value.body == {
        "message": "ChatGPT: Something went wrong",
        "type": "upstream_error",
        "code": "bad_gateway",
    }


async def test_error_event_mid_stream_is_an_sdk_error(serve_app: Any, start_gateway: Any) -> None:
    """The simulator only fails before any text: this upstream fails after some."""

    async def conversation(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for text in ("Half", "Half an"):
            message = {
                "id": "m1",
                "author": {"role": "assistant"},
                "content": {"content_type": "text", "parts": [text]},
                "recipient": "all",
            }
            await response.write(encode_event({"message": message, "error": None}))
        await response.write(encode_event({"message": None, "error": "Server overloaded"}))
        await response.write(encode_event("[DONE]"))
        return response

    app = web.Application()
    app.router.add_post("/backend-api/conversation", conversation)
    gateway = await start_gateway(config(await serve_app(app) + "/backend-api"), {})
    stream = await client(gateway).chat.completions.create(
        model="gpt-4", messages=user("hi"), stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["Half", " an"]
    assert caught.value.message == "ChatGPT: Server overloaded"


async def test_upstream_dying_mid_stream_ends_with_an_error_event(gateway: Any) -> None:
    stream = await client(gateway).chat.completions.create(
        model="gpt-4", messages=user("x [sim-fail:die]"), stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(caught.value, openai.APIConnectionError)  # not a cut connection
    assert caught.value.message == "ChatGPT's answer ended before it was complete"
    assert received and "".join(received) != answer_text("x [sim-fail:die]")

    body = {"model": "gpt-4", "messages": user("x [sim-fail:die]"), "stream": True}
    async with gateway.request(
        "POST", "/imitate/v1/chat/completions", json=body, headers={"Authorization": CLIENT_TOKEN}
    ) as response:
        text = (await response.read()).decode()  # ends cleanly: no payload error
    events = text.strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "bad_gateway"
    assert await gateway.service.runtime.wait_idle(HANG_GUARD)


async def test_upstream_dying_before_a_non_streaming_answer_is_502(gateway: Any) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client(gateway).chat.completions.create(
            model="gpt-4", messages=user("x [sim-fail:die]")
        )
    assert caught.value.status_code == 502


async def test_client_disconnect_stops_the_upstream_stream(start_gateway: Any) -> None:
    async with await start_simulator(delay=0.05, words=2000) as slow:
        gateway = await start_gateway(config(slow.chatgpt_url), {})
        async with gateway.request(
            "POST",
            "/imitate/v1/chat/completions",
            json={"model": "gpt-4", "messages": user("go on"), "stream": True},
            headers={"Authorization": CLIENT_TOKEN},
        ) as response:
            assert response.status == 200
            first = await response.content.readuntil(b"\n\n")
            assert json.loads(first[len(b"data: ") :])["choices"][0]["delta"]["role"] == "assistant"
        # Leaving the block closed the connection: the gateway must let go of the
        # upstream stream (2,000 events 50 ms apart) instead of reading it to the end.
        assert await gateway.service.runtime.wait_idle(HANG_GUARD)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": "gpt-4", "messages": user("x"), "n": 2}, "'n' > 1"),
        ({"model": "gpt-4", "messages": []}, "'messages' is required"),
        ({"model": "gpt-4", "messages": [{"role": "tool", "content": "x"}]}, "tools"),
        (
            {
                "model": "gpt-4",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
            "'image_url' is not supported",
        ),
    ],
)
async def test_invalid_requests_are_400_before_the_upstream(
    gateway: Any, sim: Simulator, body: dict[str, Any], problem: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client(gateway).chat.completions.create(**body)
    assert problem in caught.value.message
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert sim.recorder.to("/backend-api/conversation") == []


async def test_a_body_that_is_not_json_is_400(gateway: Any, sim: Simulator) -> None:
    async with gateway.request(
        "POST",
        "/imitate/v1/chat/completions",
        data=b"{not json",
        headers={"Authorization": CLIENT_TOKEN, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert sim.recorder.to("/backend-api/conversation") == []


async def test_wrong_method_is_405(gateway: Any) -> None:
    async with gateway.request(
        "GET", "/imitate/v1/chat/completions", headers={"Authorization": CLIENT_TOKEN}
    ) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"


# --- models -------------------------------------------------------------------------------


async def test_model_list(gateway: Any, sim: Simulator) -> None:
    models = [m async for m in client(gateway).models.list()]
    assert [m.id for m in models] == ["text-davinci-002-render-sha", "gpt-4", "gpt-3.5"]
    assert {(m.object, m.owned_by) for m in models} == {("model", "chatgpt")}
    assert sim.recorder.last.path == "/backend-api/models"
    assert sim.recorder.last.headers["Authorization"] == f"Bearer {CLIENT_TOKEN}"


async def test_model_list_error(gateway: Any) -> None:
    with pytest.raises(openai.AuthenticationError):
        await client(gateway).models.list(extra_headers={"X-Sim-Status": "401"})


async def test_one_model_on_a_route_of_its_own(sim: Simulator, start_gateway: Any) -> None:
    text = (
        config(sim.chatgpt_url)
        + """
[routes.imitate_model]
methods = ["GET"]
path = "/imitate/v1/models/{model}"
upstream = "chatgpt"
pipeline = ["imitate"]
"""
    )
    gateway = await start_gateway(text, {})
    model = await client(gateway).models.retrieve("gpt-4")
    assert (model.id, model.owned_by) == ("gpt-4", "chatgpt")
    assert sim.recorder.last.path == "/backend-api/models"
    with pytest.raises(openai.NotFoundError):
        await client(gateway).models.retrieve("gpt-9")


# --- tokens -------------------------------------------------------------------------------


async def test_an_unset_server_token_starts(sim: Simulator, start_gateway: Any) -> None:
    text = config(sim.chatgpt_url, 'access_token = "${IMITATE_ACCESS_TOKEN:-}"')
    gateway = await start_gateway(text, {"IMITATE_ACCESS_TOKEN": ""})
    async with gateway.request(
        "POST", "/imitate/v1/chat/completions", json={"model": "gpt-4", "messages": user("x")}
    ) as response:
        assert response.status == 401
        assert "missing credential" in (await response.json())["error"]["message"]
    assert sim.recorder.to("/backend-api/conversation") == []


async def test_server_token_serves_anonymous_clients_when_allowed(
    sim: Simulator, start_gateway: Any
) -> None:
    imitate = f'access_token = "{SERVER_TOKEN}"\nallow_anonymous = true'
    gateway = await start_gateway(config(sim.chatgpt_url, imitate), {})
    async with gateway.request(
        "POST", "/imitate/v1/chat/completions", json={"model": "gpt-4", "messages": user("anon")}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        answer = await response.json()
    assert answer["choices"][0]["message"]["content"] == answer_text("anon")
    assert sim.recorder.last.headers["Authorization"] == f"Bearer {SERVER_TOKEN}"
    # A client that brings its own token uses it.
    await client(gateway).chat.completions.create(model="gpt-4", messages=user("mine"))
    assert sim.recorder.last.headers["Authorization"] == f"Bearer {CLIENT_TOKEN}"


async def test_server_token_behind_client_keys(sim: Simulator, start_gateway: Any) -> None:
    auth = f'mode = "keys"\n[plugins.auth.keys.alice]\nsha256 = "{key_digest("alice-key")}"'
    imitate = f'access_token = "{SERVER_TOKEN}"'
    gateway = await start_gateway(config(sim.chatgpt_url, imitate, auth), {})
    completion = await client(gateway, "alice-key").chat.completions.create(
        model="gpt-4", messages=user("keyed")
    )
    assert completion.choices[0].message.content == answer_text("keyed")
    assert sim.recorder.last.headers["Authorization"] == f"Bearer {SERVER_TOKEN}"
    with pytest.raises(openai.AuthenticationError):
        await client(gateway, "mallory").chat.completions.create(model="gpt-4", messages=user("x"))


def test_config_check_asks_for_an_upstream() -> None:
    plugin = Imitate(Imitate.Config(access_token=SERVER_TOKEN))
    routes = {"chat": RouteConfig(path="/chat", pipeline=("imitate",))}
    problems = plugin.check(GatewayConfig(plugins={"imitate": {}}, routes=routes))
    assert problems == ["$.routes.chat: imitate needs an upstream (ChatGPT's)"]


# --- as a plain object ----------------------------------------------------------------------


def exchange(body: dict[str, Any]) -> Exchange:
    request = make_mocked_request("POST", "/imitate/v1/chat/completions")
    ex = Exchange(
        request=request,
        route_name="imitate_chat",
        route=RouteConfig(path="/imitate/v1/chat/completions", upstream="chatgpt"),
        upstream=UpstreamConfig(url="http://chatgpt.invalid/backend-api", name="chatgpt"),
        path_params={},
        path="/imitate/v1/chat/completions",
        upstream_url=URL("http://chatgpt.invalid/backend-api/conversation"),
        upstream_headers=CIMultiDict({"Authorization": "Bearer t", "X-Stainless-Lang": "python"}),
        client_ip="127.0.0.1",
        request_id="test",
    )
    ex.body = json.dumps(body).encode()
    return ex


async def test_hooks_set_usage_and_the_answer_head() -> None:
    plugin = Imitate(Imitate.Config())
    ex = exchange({"model": "gpt-3.5-turbo", "messages": user("abcdefgh"), "stream": True})
    assert await plugin.on_request(ex) is None
    assert str(ex.upstream_url) == "http://chatgpt.invalid/backend-api/conversation"
    assert "X-Stainless-Lang" not in ex.upstream_headers
    assert json.loads(ex.body or b"")["model"] == "text-davinci-002-render-sha"

    ex.status = ex.upstream_status = 200
    ex.response_headers = CIMultiDict(
        {"Content-Type": "text/event-stream; charset=utf-8", "Content-Length": "9"}
    )
    await plugin.on_response(ex)
    assert ex.response_headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert "Content-Length" not in ex.response_headers

    message = {
        "id": "m",
        "author": {"role": "assistant"},
        "content": {"content_type": "text", "parts": ["abcdefghi"]},
        "metadata": {"finish_details": {"type": "stop"}},
    }
    out = await plugin.on_chunk(ex, encode_event({"message": message, "error": None}))
    assert b'"role":"assistant"' in out
    assert ex.usage is not None
    assert (ex.usage.prompt_tokens, ex.usage.completion_tokens) == (2, 3)
    assert (await plugin.on_chunk(ex, encode_event("[DONE]"))).endswith(b"data: [DONE]\n\n")
    assert await plugin.on_chunk(ex, b"") == b""


async def test_a_non_streaming_answer_is_json() -> None:
    plugin = Imitate(Imitate.Config())
    ex = exchange({"model": "gpt-4", "messages": user("x")})
    await plugin.on_request(ex)
    ex.status = ex.upstream_status = 200
    ex.response_headers = CIMultiDict({"Content-Type": "text/event-stream"})
    await plugin.on_response(ex)
    assert ex.response_headers["Content-Type"] == "application/json"


async def test_an_unreadable_stream_encoding_is_502() -> None:
    plugin = Imitate(Imitate.Config())
    ex = exchange({"model": "gpt-4", "messages": user("x")})
    await plugin.on_request(ex)
    ex.status = ex.upstream_status = 200
    ex.response_headers = CIMultiDict(
        {"Content-Type": "text/event-stream", "Content-Encoding": "br"}
    )
    with pytest.raises(BadGateway, match="Content-Encoding 'br'"):
        await plugin.on_response(ex)
