"""The routing tests' upstreams behave as the real services' shapes and fail on command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from gateway.testing.recorder import Recorder
from tests.model_upstreams import AZURE_KEY, FlakyUpstream, azure_upstream, openai_upstream

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def flaky() -> AsyncIterator[FlakyUpstream]:
    upstream = await FlakyUpstream().start()
    yield upstream
    await upstream.stop()


async def test_openai_shape(serve_app: Callable[[web.Application], Awaitable[str]]) -> None:
    recorder = Recorder()
    url = await serve_app(openai_upstream("oa", recorder))
    headers = {"Authorization": "Bearer k"}
    async with aiohttp.ClientSession() as session:
        for path, body in [
            ("/v1/chat/completions", CHAT),
            ("/v1/completions", {"model": "m", "prompt": "p"}),
            ("/v1/embeddings", {"model": "m", "input": "x"}),
            ("/v1/responses", {"model": "m", "input": "x"}),
        ]:
            async with session.post(url + path, json=body, headers=headers) as response:
                assert response.status == 200, path
                assert response.headers["X-Served-By"] == "oa"
                assert (await response.json())["model"] == "m"
    assert [r.path for r in recorder.requests][-1] == "/v1/responses"


async def test_azure_shape(serve_app: Callable[[web.Application], Awaitable[str]]) -> None:
    recorder = Recorder()
    url = await serve_app(azure_upstream("az", recorder))
    path = "/openai/deployments/dep/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.post(url + path, json=CHAT, headers={"api-key": AZURE_KEY}) as r:
            assert r.status == 404  # no api-version
        query = {"api-version": "2024-10-21"}
        async with session.post(url + path, json=CHAT, params=query) as r:
            assert r.status == 401
        async with session.post(
            url + path, json=CHAT, params=query, headers={"api-key": AZURE_KEY}
        ) as r:
            assert r.status == 200
            assert r.headers["X-Served-By"] == "az"
    assert recorder.last.path == path


async def test_flaky_fails_on_command(flaky: FlakyUpstream) -> None:
    headers = {"Authorization": "Bearer k"}
    chat = flaky.url + "/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.post(chat, json=CHAT, headers=headers) as r:
            assert r.status == 200
        flaky.fail("status", 503)
        async with session.post(chat, json=CHAT, headers=headers) as r:
            assert r.status == 503
        flaky.fail("status", 429)
        async with session.post(chat, json=CHAT, headers=headers) as r:
            assert (r.status, r.headers["Retry-After"]) == (429, "1")
        flaky.fail("reset")
        with pytest.raises(aiohttp.ClientError):
            async with session.post(chat, json=CHAT, headers=headers) as r:
                await r.read()
        flaky.fail("midstream")
        async with session.post(chat, json=CHAT, headers=headers) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
        flaky.fail("hang")
        flaky.hang_for = 1.0
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(
                chat, json=CHAT, headers=headers, timeout=aiohttp.ClientTimeout(sock_read=0.2)
            ) as r:
                await r.read()
        flaky.fail("ok")
        await flaky.refuse()
        with pytest.raises(aiohttp.ClientConnectorError):
            async with session.post(chat, json=CHAT, headers=headers) as r:
                pass
        await flaky.accept()
        async with session.post(chat, json=CHAT, headers=headers) as r:
            assert r.status == 200
