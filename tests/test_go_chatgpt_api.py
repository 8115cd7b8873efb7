"""Coming from go-chatgpt-api: its variables, read by the default config, do what they did.

Each test runs the shipped config.toml with the variables set, against the simulator
(`gateway.testing`), with the official OpenAI SDK as the client where it applies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from structlog.testing import capture_logs

from gateway.config import default_config_text
from gateway.errors import ConfigError
from gateway.runtime import load_runtime
from gateway.testing import DEMO_ACCOUNT, Simulator, start_simulator
from gateway.testing.chatgpt_stream import CONTINUATION
from gateway.testing.text import answer_text
from tests.test_cli import start_run, stop_run

HANG_GUARD = 30


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with await start_simulator() as simulator:
        yield simulator


def sdk(gateway: Any, token: str = "client-token", **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=gateway.url + "/imitate/v1",
        api_key=token,
        max_retries=0,
        timeout=HANG_GUARD,
        default_headers=headers,
    )


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def answer(client: openai.AsyncOpenAI, prompt: str, stream: bool) -> tuple[str, str | None]:
    """The text and finish reason of one answer, streamed or not."""
    if not stream:
        completion = await client.chat.completions.create(model="gpt-4", messages=user(prompt))
        return completion.choices[0].message.content or "", completion.choices[0].finish_reason
    chunks = [
        chunk
        async for chunk in await client.chat.completions.create(
            model="gpt-4", messages=user(prompt), stream=True
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].choices[0].finish_reason


def conversations(sim: Simulator) -> list[dict[str, Any]]:
    return [r.json for r in sim.recorder.requests if r.path.endswith("/conversation")]


@pytest.mark.parametrize(("value", "disabled"), [(None, True), ("true", False), ("false", True)])
async def test_enable_history_sets_history_and_training_disabled(
    sim: Simulator, start_gateway: Any, value: str | None, disabled: bool
) -> None:
    env = {"CHATGPT_BASE_URL": sim.chatgpt_url}
    if value is not None:
        env["ENABLE_HISTORY"] = value
    gateway = await start_gateway(default_config_text(), env)
    await answer(sdk(gateway), "Hi", stream=False)
    assert conversations(sim)[-1]["history_and_training_disabled"] is disabled


@pytest.mark.parametrize("stream", [False, True])
async def test_continue_signal_continues_an_answer_cut_for_length(
    sim: Simulator, start_gateway: Any, stream: bool
) -> None:
    env = {"CHATGPT_BASE_URL": sim.chatgpt_url, "CONTINUE_SIGNAL": "1"}
    gateway = await start_gateway(default_config_text(), env)
    prompt = "Long one [sim-fail:max-tokens]"
    text, finish = await answer(sdk(gateway), prompt, stream)
    assert text == answer_text(prompt) + CONTINUATION  # one answer, nothing repeated
    assert finish == "stop"
    first, then = conversations(sim)
    assert then["action"] == "continue" and "messages" not in then
    assert then["conversation_id"] and then["model"] == first["model"]


async def test_continue_signal_gives_up_after_three_continuations(
    sim: Simulator, start_gateway: Any
) -> None:
    env = {"CHATGPT_BASE_URL": sim.chatgpt_url, "CONTINUE_SIGNAL": "true"}
    gateway = await start_gateway(default_config_text(), env)
    # Every answer, continued ones too, is cut for length.
    client = sdk(gateway, **{"X-Sim-Fail": "max-tokens"})
    text, finish = await answer(client, "Long one", stream=True)
    assert text == answer_text("Long one") + 3 * CONTINUATION
    assert finish == "length"
    assert [body["action"] for body in conversations(sim)] == ["next", *3 * ["continue"]]


async def test_without_continue_signal_a_cut_answer_finishes_with_length(
    sim: Simulator, start_gateway: Any
) -> None:
    gateway = await start_gateway(default_config_text(), {"CHATGPT_BASE_URL": sim.chatgpt_url})
    prompt = "Long one [sim-fail:max-tokens]"
    assert await answer(sdk(gateway), prompt, stream=True) == (answer_text(prompt), "length")
    assert len(conversations(sim)) == 1


# --- OPENAI_EMAIL and OPENAI_PASSWORD: the server's own account -----------------------------

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]}


def login_env(sim: Simulator, password: str = DEMO_ACCOUNT.password) -> dict[str, str]:
    return {
        **sim.environment(),
        "OPENAI_EMAIL": DEMO_ACCOUNT.email,
        "OPENAI_PASSWORD": password,
    }


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def serving_anonymously() -> str:
    return default_config_text().replace("allow_anonymous = false", "allow_anonymous = true")


async def imitate(gateway: Any, **headers: str) -> tuple[int, dict[str, Any]]:
    async with gateway.request(
        "POST", "/imitate/v1/chat/completions", json=CHAT, headers=headers
    ) as response:
        return response.status, await response.json()


async def test_openai_email_logs_in_at_start_and_renews_the_token_before_it_expires(
    sim: Simulator, start_gateway: Any
) -> None:
    # Five seconds: renewed at 80 % of its life, a second before it expires, which a
    # loaded machine's late timer does not eat (with three, 0.6 s once did).
    sim.login.token_lifetime = timedelta(seconds=5)
    with capture_logs() as logs:
        gateway = await start_gateway(serving_anonymously(), login_env(sim))
        status, _ = await imitate(gateway)  # no token of its own: the server's
    assert status == 200
    [first] = sim.login.tokens_for(DEMO_ACCOUNT.email)
    assert sim.recorder.last.headers["Authorization"] == f"Bearer {first}"
    assert any(log["event"] == "chatgpt server login succeeded" for log in logs)
    assert not any(DEMO_ACCOUNT.password in repr(log) for log in logs)

    for _ in range(240):  # renewed at 80 % of the token's life, before it expires
        if len(sim.login.tokens_for(DEMO_ACCOUNT.email)) == 2:
            break
        await asyncio.sleep(0.05)
    first, renewed = sim.login.tokens_for(DEMO_ACCOUNT.email)
    # Renewed 1 s before the expiry; ``iat`` counts whole seconds, and a loaded
    # machine may run the renewal a little late: not after the expiry's second.
    assert claims(renewed)["iat"] <= claims(first)["exp"]
    # The simulator records the token as it issues it; the gateway takes it once the
    # login answer is read: a request may go out with the first token meanwhile.
    for _ in range(40):
        assert (await imitate(gateway))[0] == 200
        if sim.recorder.last.headers["Authorization"] == f"Bearer {renewed}":
            break
        await asyncio.sleep(0.05)
    assert sim.recorder.last.headers["Authorization"] == f"Bearer {renewed}"

    assert (await imitate(gateway, Authorization="Bearer own-token"))[0] == 200
    assert sim.recorder.last.headers["Authorization"] == "Bearer own-token"  # the client's wins


async def test_openai_email_without_client_keys_warns_and_refuses_anonymous_requests(
    sim: Simulator, start_gateway: Any
) -> None:
    with capture_logs() as logs:
        gateway = await start_gateway(default_config_text(), login_env(sim))
    warnings = [log for log in logs if log["log_level"] == "warning"]
    assert len(warnings) == 1 and "allow_anonymous" in warnings[0]["event"], warnings
    status, body = await imitate(gateway)
    assert status == 401
    assert "allow_anonymous = true" in body["error"]["message"]
    assert "gateway key" in body["error"]["message"]
    assert (await imitate(gateway, Authorization="Bearer own-token"))[0] == 200


async def test_a_failed_server_login_is_logged_and_answered_503(
    sim: Simulator, start_gateway: Any
) -> None:
    with capture_logs() as logs:
        gateway = await start_gateway(serving_anonymously(), login_env(sim, "not-it-42"))
        status, body = await imitate(gateway)
    assert status == 503
    assert "Wrong email or password" in body["error"]["message"]
    errors = [log for log in logs if log["log_level"] == "error"]
    assert errors and errors[0]["event"] == "chatgpt server login failed"
    assert not any("not-it-42" in repr(log) for log in logs)


async def test_arkose_token_url_is_answered_with_a_warning(tmp_path: Path) -> None:
    arkose = {"ARKOSE_TOKEN_URL": "http://arkose.example/token"}
    process, _ = await start_run(tmp_path, {**os.environ, **arkose})
    out, _ = await stop_run(process)
    [warning] = [json.loads(line) for line in out.splitlines() if b"ARKOSE_TOKEN_URL" in line]
    assert warning["level"] == "warning"
    assert "captcha" in warning["event"] and "not supported" in warning["event"]


def test_openai_email_without_a_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_runtime(default_config_text(), "config.toml", {"OPENAI_EMAIL": "me@example.com"})
    assert caught.value.problems == [
        "$.plugins.chatgpt_login: email and password (OPENAI_EMAIL, OPENAI_PASSWORD) go together"
    ]


async def test_chatgpt_anti_abuse_headers_pass_through_from_the_client(
    sim: Simulator, start_gateway: Any
) -> None:
    gateway = await start_gateway(default_config_text(), {"CHATGPT_BASE_URL": sim.chatgpt_url})
    sentinel = {
        "OpenAI-Sentinel-Chat-Requirements-Token": "requirements",
        "OpenAI-Sentinel-Proof-Token": "proof",
        "OpenAI-Sentinel-Arkose-Token": "arkose",
    }
    body = {
        "action": "next",
        "messages": [{"id": "m", "content": {"content_type": "text", "parts": ["Hi"]}}],
        "parent_message_id": "p",
        "model": "text-davinci-002-render-sha",
    }
    async with gateway.request(
        "POST", "/conversation", json=body, headers={"Authorization": "token", **sentinel}
    ) as response:
        assert response.status == 200
        await response.read()
    received = sim.recorder.last.headers
    assert {name: received.get(name) for name in sentinel} == sentinel  # never computed: passed on
