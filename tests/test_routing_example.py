"""examples/routing.toml, which the README's "Routing models" quotes, run as written."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
import pytest
from aiohttp import web

from gateway.keys import key_digest, new_key
from gateway.testing.pytest_plugin import StartGateway
from gateway.testing.recorder import Recorder
from tests.model_upstreams import AZURE_KEY, azure_upstream, openai_upstream

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "routing.toml"


def test_the_readme_quotes_the_routing_file_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Routing models", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"```toml\n(.*?)```", section, re.S)
    blocks = ["\n".join(line.removeprefix("   ") for line in b.splitlines()) for b in found]
    assert len(blocks) == 3
    for block in blocks:
        assert block in EXAMPLE.read_text(), block


async def test_the_routing_file_works_as_written(
    start_gateway: StartGateway, serve_app: Callable[[web.Application], Awaitable[str]]
) -> None:
    seen = {name: Recorder() for name in ("openai", "azure", "vllm")}
    alice, bob = new_key()[0], new_key()[0]
    env = {
        "OPENAI_BASE_URL": await serve_app(openai_upstream("openai", seen["openai"])),
        "AZURE_OPENAI_URL": await serve_app(azure_upstream("azure", seen["azure"])),
        "VLLM_URL": await serve_app(openai_upstream("vllm", seen["vllm"])),
        "GO_CHATGPT_API_PROXY": "",
        "ALICE_KEY_SHA256": key_digest(alice),
        "BOB_KEY_SHA256": key_digest(bob),
        "OPENAI_API_KEY": "sk-openai-server",
        "AZURE_API_KEY": AZURE_KEY,
        "PORT": "8080",
    }
    gateway = await start_gateway(EXAMPLE.read_text(), env)
    as_alice = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=alice, max_retries=0)
    as_bob = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=bob, max_retries=0)
    message = [{"role": "user", "content": "hello"}]

    served = set()
    for _ in range(12):  # weights 3:1: both deployments serve within a few requests
        raw = await as_alice.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=message,  # type: ignore[arg-type]
        )
        served.add(raw.headers["x-gateway-deployment"])
    assert served <= {"azure/gpt-4o-eastus", "openai/gpt-4o-2024-08-06"}
    assert seen["azure"].requests, "three parts in four go to Azure"
    assert seen["azure"].last.path == "/openai/deployments/gpt-4o-eastus/chat/completions"
    assert seen["azure"].last.headers["api-key"] == AZURE_KEY
    for request in seen["openai"].requests:
        assert request.headers["Authorization"] == "Bearer sk-openai-server"

    answer = await as_bob.chat.completions.create(model="llama-3.1-8b", messages=message)  # type: ignore[arg-type]
    assert answer.choices[0].message.content.startswith("You said: hello")  # type: ignore[union-attr]
    assert seen["vllm"].last.json_body["model"] == "meta-llama/Llama-3.1-8B-Instruct"

    embedded = await as_alice.embeddings.create(model="text-embedding-3-small", input="x")
    assert embedded.model == "text-embedding-3-small"
    assert [m.id async for m in as_bob.models.list()] == ["gpt-4o-mini", "llama-3.1-8b"]
    with pytest.raises(openai.PermissionDeniedError):
        await as_bob.chat.completions.create(model="gpt-4o", messages=message)  # type: ignore[arg-type]
    await as_alice.close()
    await as_bob.close()
