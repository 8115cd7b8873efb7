"""Coming from go-chatgpt-api: its variables, read by the default config, do what they did.

Each test runs the shipped config.toml with the variables set, against the simulator
(`gateway.testing`), with the official OpenAI SDK as the client where it applies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from gateway.config import default_config_text
from gateway.testing import Simulator, start_simulator
from gateway.testing.chatgpt_stream import CONTINUATION
from gateway.testing.text import answer_text

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
