"""Three real model upstreams on loopback for the ``routing`` tests.

- `openai_upstream`: the simulated OpenAI API (`gateway.testing.openai_app`) plus
  ``/v1/completions`` and ``/v1/responses``;
- `azure_upstream`: Azure OpenAI's shape: ``/openai/deployments/{deployment}/...``
  with ``api-version`` required in the query and ``api-key`` checked;
- `FlakyUpstream`: OpenAI-shaped, failing on command: refusing connections,
  hanging before its first byte, answering a status (5xx, 429), resetting the
  connection, or breaking off mid-stream.

Each answers with ``X-Served-By: <name>`` so that a test can tell who answered.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Literal

from aiohttp import web

from gateway.testing import openai as simulated_openai
from gateway.testing.flavors import openai_error
from gateway.testing.openai_chat import ChatCompletions
from gateway.testing.recorder import Recorder, capture
from gateway.testing.sse import CONTENT_TYPE, encode_event

AZURE_KEY = "azure-secret-key"


def _served_by(name: str) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if not response.prepared:
            response.headers["X-Served-By"] = name
        return response

    return middleware


async def _completions(request: web.Request) -> web.Response:
    """``/v1/completions`` (legacy): echoes the model and the prompt."""
    body = await request.json()
    text = f"completed: {body.get('prompt')}"
    return web.json_response(
        {
            "object": "text_completion",
            "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    )


async def _responses(request: web.Request) -> web.Response:
    """``/v1/responses``: a minimal Responses API object."""
    body = await request.json()
    text = f"responded: {body.get('input')}"
    return web.json_response(
        {
            "id": "resp_1",
            "object": "response",
            "model": body["model"],
            "status": "completed",
            "output": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text}],
                }
            ],
            "usage": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        }
    )


def openai_upstream(name: str, recorder: Recorder) -> web.Application:
    """An OpenAI-shaped upstream: chat, completions, embeddings, responses, models."""
    app = simulated_openai.openai_app(recorder)
    app.middlewares.append(_served_by(name))
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post("/v1/responses", _responses)
    return app


def azure_upstream(name: str, recorder: Recorder, key: str = AZURE_KEY) -> web.Application:
    """An Azure-OpenAI-shaped upstream: the deployment in the path, ``api-key``, ``api-version``."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        recorder.add(await capture(request))
        if "api-version" not in request.query:
            return web.json_response(openai_error(404, "Resource not found"), status=404)
        if request.headers.get("api-key") != key:
            return web.json_response(openai_error(401, "Access denied: bad api-key"), status=401)
        return await handler(request)

    app = web.Application(middlewares=[check, _served_by(name)])
    base = "/openai/deployments/{deployment}"
    app.router.add_post(f"{base}/chat/completions", ChatCompletions().handle)
    app.router.add_post(f"{base}/completions", _completions)
    app.router.add_post(f"{base}/embeddings", simulated_openai.embeddings)
    app.router.add_post("/openai/responses", _responses)
    return app


Mode = Literal["ok", "status", "hang", "reset", "midstream"]


class FlakyUpstream:
    """An OpenAI-shaped upstream that fails on command; it owns its port to refuse on it."""

    def __init__(self, name: str = "flaky") -> None:
        self.name = name
        self.recorder = Recorder()
        self.mode: Mode = "ok"
        self.status = 500
        self.hang_for = 3.0
        self.app = openai_upstream(name, self.recorder)
        self.app.middlewares.insert(0, self._fail)
        self.runner = web.AppRunner(self.app)
        self.site: web.TCPSite | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FlakyUpstream:
        """Serve on a free port of 127.0.0.1."""
        await self.runner.setup()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        await self.accept()
        return self

    async def accept(self) -> None:
        """Listen (again) on the upstream's port."""
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()

    async def refuse(self) -> None:
        """Stop listening: connections are refused until `accept`."""
        if self.site is not None:
            await self.site.stop()
            self.site = None

    async def stop(self) -> None:
        await self.runner.cleanup()

    def fail(self, mode: Mode, status: int = 500) -> None:
        """Fail every request from now on the way ``mode`` says (``ok``: answer well)."""
        self.mode = mode
        self.status = status

    @web.middleware
    async def _fail(self, request: web.Request, handler: Any) -> web.StreamResponse:
        mode = self.mode
        if mode == "ok":
            return await handler(request)
        self.recorder.add(await capture(request))
        if mode == "status":
            headers = {"Retry-After": "1"} if self.status == 429 else {}
            message = "overloaded" if self.status != 429 else "Rate limit reached"
            return web.json_response(
                openai_error(self.status, message), status=self.status, headers=headers
            )
        if mode == "hang":
            await asyncio.sleep(self.hang_for)
            return web.Response(text="too late")
        assert request.transport is not None
        if mode == "reset":
            request.transport.abort()
            return web.Response()
        # midstream: the head and one event, then the connection breaks.
        response = web.StreamResponse(
            headers={"Content-Type": CONTENT_TYPE, "X-Served-By": self.name}
        )
        await response.prepare(request)
        await response.write(
            encode_event({"object": "chat.completion.chunk", "model": "x", "choices": []})
        )
        await asyncio.sleep(0.05)
        request.transport.abort()
        return response
