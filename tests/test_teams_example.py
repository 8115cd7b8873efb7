"""The Teams example (examples/teams.toml, which the README quotes), run as written, and
config.toml's commented copy."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gateway.config import default_config_text
from gateway.keys import key_digest, new_key
from gateway.runtime import load_runtime
from gateway.testing import start_simulator

ROOT = Path(__file__).resolve().parent.parent
TEAMS = ROOT / "examples" / "teams.toml"


def readme_teams_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Teams and quotas", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    return ["\n".join(line.removeprefix("   ") for line in b.splitlines()) for b in blocks]


def test_the_readme_quotes_the_teams_file_verbatim():
    blocks = readme_teams_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        assert block in TEAMS.read_text(), block


def test_the_teams_file_keeps_every_route_of_the_default_config():
    teams = tomllib.loads(TEAMS.read_text())
    default = tomllib.loads(default_config_text())
    assert teams["routes"] == default["routes"]  # normalisation and limits included
    assert list(teams["routes"]) == list(default["routes"])  # in the same order
    assert teams["server"]["port"] == default["server"]["port"]  # reads PORT and HOST
    assert teams["server"]["host"] == default["server"]["host"]


@pytest.fixture
async def sim():
    simulator = await start_simulator()
    yield simulator
    await simulator.close()


async def test_the_teams_file_works_as_written(sim, start_gateway):
    alice, bob = new_key()[0], new_key()[0]
    env = {
        "CHATGPT_BASE_URL": sim.chatgpt_url,
        "OPENAI_BASE_URL": sim.openai_url,
        "GO_CHATGPT_API_PROXY": "",
        "ALICE_KEY_SHA256": key_digest(alice),
        "BOB_KEY_SHA256": key_digest(bob),
        "CHATGPT_ACCESS_TOKEN_1": "chatgpt-secret-1",
        "CHATGPT_ACCESS_TOKEN_2": "chatgpt-secret-2",
        "OPENAI_API_KEY": "sk-org-secret",
        "REDIS_URL": "",
    }
    gateway = await start_gateway(TEAMS.read_text(), env)
    conversation = {
        "action": "next",
        "messages": [
            {
                "id": "m",
                "author": {"role": "user"},
                "content": {"content_type": "text", "parts": ["Hi"]},
            }
        ],
        "parent_message_id": "p",
        "model": "text-davinci-002-render-sha",
        "conversation_id": "",
    }
    for expected in ("chatgpt-secret-1", "chatgpt-secret-2"):
        async with gateway.request(
            "POST", "/conversation", json=conversation, headers={"Authorization": f"Bearer {alice}"}
        ) as response:
            assert response.status == 200
            assert response.headers["X-RateLimit-Limit"]
            await response.read()
        assert sim.recorder.last.headers["Authorization"] == f"Bearer {expected}"
        assert sim.recorder.last.json["conversation_id"] is None  # normalised as by go-chatgpt-api
    alice_auth = {"Authorization": f"Bearer {alice}"}
    async with gateway.request("GET", "/conversations?limit=500", headers=alice_auth) as response:
        assert (await response.json())["limit"] == 100
    imitate = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hi"}]}
    async with gateway.request(
        "POST", "/imitate/v1/chat/completions", json=imitate, headers=alice_auth
    ) as response:
        assert (await response.json())["object"] == "chat.completion"
    assert sim.recorder.last.headers["Authorization"].startswith("Bearer chatgpt-secret-")

    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    bob_auth = {"Authorization": f"Bearer {bob}"}

    async def status(path: str, body: dict[str, object], headers: dict[str, str]) -> int:
        async with gateway.request("POST", path, json=body, headers=headers) as response:
            return response.status

    assert await status("/v1/chat/completions", chat, bob_auth) == 200
    assert sim.recorder.last.headers["Authorization"] == "Bearer sk-org-secret"
    assert await status("/v1/chat/completions", {**chat, "model": "gpt-4"}, bob_auth) == 403
    assert await status("/conversation", conversation, bob_auth) == 403
    assert await status("/conversation", conversation, {"Authorization": "gw-nope"}) == 401


def test_the_commented_teams_example_in_config_toml_is_valid():
    text = default_config_text()
    start = text.index('# [plugins.auth]\n# mode = "keys"')
    end = text.index("# --- go-chatgpt-api's routes")
    example = "\n".join(
        line[2:] if line.startswith("# ") else "" for line in text[start:end].splitlines()
    )
    # The example replaces [plugins.auth]: lay it over the default config.
    default = text[:start].replace('[plugins.auth]\nmode = "passthrough"\n', "")
    digest = key_digest(new_key()[0])
    merged = default + "\n" + example.replace("<from gateway keygen>", digest) + "\n" + text[end:]
    env = {"CHATGPT_ACCESS_TOKEN_1": "a", "CHATGPT_ACCESS_TOKEN_2": "b", "OPENAI_API_KEY": "c"}
    runtime = load_runtime(merged, "config.toml", env)
    auth = runtime.config.plugins["auth"]
    assert auth["mode"] == "keys" and set(auth["keys"]) == {"alice", "bob"}
    assert len(runtime.config.plugins["ratelimit"]["rules"]) == 4
