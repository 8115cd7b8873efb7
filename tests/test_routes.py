"""Every route of SPEC section 3, end to end: the shipped config in front of the simulator.

Each test checks both what the upstream received and what the client got.
"""

from __future__ import annotations

import json

import pytest

from gateway.testing import Recorder, start_simulator

TOKEN = {"Authorization": "user-token"}


@pytest.fixture
async def sim():
    simulator = await start_simulator(recorder=Recorder())
    yield simulator
    await simulator.close()


@pytest.fixture
async def gateway(sim, start_gateway):
    env = {
        "CHATGPT_BASE_URL": sim.chatgpt_url,
        "CHATGPT_WEB_URL": sim.web_url,
        "CHATGPT_AUTH0_URL": sim.auth0_url,
        "OPENAI_BASE_URL": sim.openai_url,
        "GO_CHATGPT_API_PROXY": "",
        "PROXY": "",
        "GATEWAY_PROXY": "",
    }
    return await start_gateway(None, env)


def conversation_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "action": "next",
        "messages": [
            {
                "id": "m1",
                "author": {"role": "user"},
                "content": {"content_type": "text", "parts": ["Hello World"]},
            }
        ],
        "parent_message_id": "p1",
        "conversation_id": "c1",
        "model": "text-davinci-002-render-sha",
        "timezone_offset_min": -480,
        "history_and_training_disabled": False,
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"offset": "0", "limit": "20"}),
        ("?offset=40&limit=50", {"offset": "40", "limit": "50"}),
        ("?limit=500", {"offset": "0", "limit": "100"}),
        ("?limit=0", {"offset": "0", "limit": "1"}),
    ],
)
async def test_get_conversations_defaults_and_caps_the_page(gateway, sim, query, expected):
    async with gateway.request("GET", "/conversations" + query, headers=TOKEN) as response:
        assert response.status == 200
        listing = await response.json()
    seen = sim.recorder.last
    assert (seen.method, seen.path) == ("GET", "/backend-api/conversations")
    assert seen.query == expected
    assert seen.headers["Authorization"] == "Bearer user-token"
    assert listing["limit"] == int(expected["limit"])


async def test_get_conversations_rejects_a_non_numeric_limit(gateway, sim):
    async with gateway.request("GET", "/conversations?limit=lots", headers=TOKEN) as response:
        assert response.status == 400
        assert "limit" in (await response.json())["error"]["message"]
    assert len(sim.recorder) == 0


async def test_get_conversation(gateway, sim):
    async with gateway.request("GET", "/conversation/abc-123", headers=TOKEN) as response:
        assert response.status == 200
        body = await response.json()
    assert sim.recorder.last.path == "/backend-api/conversation/abc-123"
    assert "mapping" in body or "title" in body


async def test_post_conversation_streams_sse_and_normalises_the_body(gateway, sim):
    sent = conversation_body(conversation_id="", extra_field={"kept": True})
    del sent["messages"][0]["author"]  # type: ignore[index]
    async with gateway.request("POST", "/conversation", json=sent, headers=TOKEN) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        text = (await response.read()).decode()
    seen = sim.recorder.last
    assert (seen.method, seen.path) == ("POST", "/backend-api/conversation")
    body = seen.json
    assert body["conversation_id"] is None
    assert body["messages"][0]["author"] == {"role": "user"}
    assert body["messages"][0]["metadata"] == {}
    assert body["extra_field"] == {"kept": True}
    assert body["messages"][0]["content"]["parts"] == ["Hello World"]
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parts = [json.loads(e)["message"]["content"]["parts"][0] for e in events if '"message": {' in e]
    assert parts[-1].startswith("You said: Hello World")
    assert all(parts[i + 1].startswith(parts[i]) for i in range(len(parts) - 1))  # cumulative


async def test_post_conversation_keeps_given_role_and_metadata(gateway, sim):
    sent = conversation_body()
    sent["messages"][0]["author"] = {"role": "system"}  # type: ignore[index]
    sent["messages"][0]["metadata"] = {"x": 1}  # type: ignore[index]
    async with gateway.request("POST", "/conversation", json=sent, headers=TOKEN) as response:
        await response.read()
    body = sim.recorder.last.json
    assert body["conversation_id"] == "c1"
    assert body["messages"][0]["author"] == {"role": "system"}
    assert body["messages"][0]["metadata"] == {"x": 1}


async def test_post_conversation_with_bad_json_is_400_and_not_forwarded(gateway, sim):
    async with gateway.request(
        "POST",
        "/conversation",
        data=b'{"action": ',
        headers={**TOKEN, "Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    assert len(sim.recorder) == 0


async def test_gen_title(gateway, sim):
    async with gateway.request(
        "POST", "/conversation/gen_title/c1", json={"message_id": "m9"}, headers=TOKEN
    ) as response:
        assert response.status == 200
        assert "title" in await response.json()
    seen = sim.recorder.last
    assert (seen.method, seen.path, seen.json) == (
        "POST",
        "/backend-api/conversation/gen_title/c1",
        {"message_id": "m9"},
    )


@pytest.mark.parametrize("body", [{"title": "new title"}, {"is_visible": False}])
async def test_patch_conversation_renames_and_deletes(gateway, sim, body):
    async with gateway.request("PATCH", "/conversation/c1", json=body, headers=TOKEN) as response:
        assert response.status == 200
        assert await response.json() == {"success": True}
    seen = sim.recorder.last
    assert (seen.method, seen.path, seen.json) == ("PATCH", "/backend-api/conversation/c1", body)


async def test_patch_conversations_deletes_all(gateway, sim):
    async with gateway.request(
        "PATCH", "/conversations", json={"is_visible": False}, headers=TOKEN
    ) as response:
        assert response.status == 200
    seen = sim.recorder.last
    assert (seen.method, seen.path, seen.json) == (
        "PATCH",
        "/backend-api/conversations",
        {"is_visible": False},
    )


async def test_message_feedback(gateway, sim):
    body = {"message_id": "m1", "conversation_id": "c1", "rating": "thumbsUp"}
    async with gateway.request(
        "POST", "/conversation/message_feedback", json=body, headers=TOKEN
    ) as response:
        assert response.status == 200
    seen = sim.recorder.last
    assert (seen.method, seen.path, seen.json) == (
        "POST",
        "/backend-api/conversation/message_feedback",
        body,
    )


async def test_chat_completions_stream(gateway, sim):
    body = {
        "model": "gpt-3.5-turbo",
        "stream": True,
        "messages": [{"role": "user", "content": "Hello World"}],
    }
    headers = {"Authorization": "Bearer sk-test"}
    async with gateway.request(
        "POST", "/v1/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = (await response.read()).decode()
    seen = sim.recorder.last
    assert (seen.method, seen.path, seen.json) == ("POST", "/v1/chat/completions", body)
    assert seen.headers["Authorization"] == "Bearer sk-test"
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text.rstrip().endswith("data: [DONE]")


async def test_chat_completions_json(gateway, sim):
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hi"}]}
    async with gateway.request(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk"}
    ) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["object"] == "chat.completion" and answer["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(
    ("method", "path", "upstream_path"),
    [
        ("GET", "/v1/models", "/v1/models"),
        ("POST", "/v1/embeddings", "/v1/embeddings"),
        ("GET", "/platform/v1/models", "/v1/models"),
        ("GET", "/chatgpt/backend-api/conversations?offset=3", "/backend-api/conversations"),
        ("GET", "/chatgpt/backend-api/models", "/backend-api/models"),
    ],
)
async def test_prefix_routes(gateway, sim, method, path, upstream_path):
    kwargs = (
        {"json": {"model": "text-embedding-3-small", "input": "hi"}} if method == "POST" else {}
    )
    async with gateway.request(
        method, path, headers={"Authorization": "Bearer t"}, **kwargs
    ) as response:
        assert response.status == 200
        await response.read()
    seen = sim.recorder.last
    assert (seen.method, seen.path) == (method, upstream_path)
    if "?" in path:
        assert seen.query == {"offset": "3"}  # the later prefix has no rewrite defaults


async def test_upstream_errors_pass_through(gateway, sim):
    async with gateway.request(
        "GET", "/conversation/x", headers={**TOKEN, "X-Sim-Status": "404"}
    ) as response:
        assert response.status == 404
        assert await response.json() == {"detail": "simulated 404"}


async def test_unknown_paths_are_404_in_the_envelope(gateway, sim):
    async with gateway.request("GET", "/not/a/route") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    assert len(sim.recorder) == 0


async def test_wrong_method_is_405(gateway, sim):
    async with gateway.request("DELETE", "/conversations", headers=TOKEN) as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "PATCH"}
    assert len(sim.recorder) == 0


async def test_cors_preflight_on_any_route(gateway, sim):
    headers = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with gateway.request("OPTIONS", "/conversation", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
    async with gateway.request(
        "GET", "/conversations", headers={**TOKEN, "Origin": "https://app.example"}
    ) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert len(sim.recorder) == 1  # the preflight never reached the upstream


async def test_login_with_the_simulated_account(gateway, sim):
    account = sim.login.accounts[0]
    body = {"username": account.email, "password": account.password}
    async with gateway.request("POST", "/auth/login", json=body) as response:
        assert response.status == 200
        token = (await response.json())["accessToken"]
    assert token in sim.login.tokens_for(account.email)
    async with gateway.request(
        "POST", "/auth/login", json={**body, "password": "wrong"}
    ) as response:
        assert response.status == 401


async def test_metrics_count_the_routes(gateway):
    async with gateway.request("GET", "/conversations", headers=TOKEN):
        pass
    async with gateway.request("GET", "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'gateway_requests_total{method="GET",route="conversations",status="200"}' in text


async def test_healthz(gateway):
    async with gateway.request("GET", "/healthz") as response:
        assert await response.json() == {"status": "ok"}


async def test_imitate_with_the_openai_sdk(gateway, sim):
    import openai

    client = openai.AsyncOpenAI(
        base_url=gateway.url + "/imitate/v1", api_key="user-token", max_retries=0
    )
    stream = await client.chat.completions.create(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hello World"}], stream=True
    )
    text = "".join(
        [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    )
    assert text == "You said: Hello World This is a simulated answer."
    body = sim.recorder.to("/backend-api/conversation")[-1].json
    assert body["model"] == "text-davinci-002-render-sha"
    models = [m.id async for m in client.models.list()]
    assert "text-davinci-002-render-sha" in models
    await client.close()
