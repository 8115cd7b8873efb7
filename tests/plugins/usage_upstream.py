"""An OpenAI-like upstream whose answers use exactly the tokens a request asks for.

A real aiohttp app for the token-quota tests: chat completions, legacy
completions and the Responses API, streamed or not.  An answer has as many
completion tokens as ``max_tokens`` (or ``max_completion_tokens``,
``max_output_tokens``; default 50) and as many prompt tokens as the prompt has
words.  Streams honour ``stream_options.include_usage`` as OpenAI does: every
chunk then carries ``"usage": null`` and a last chunk with no choices carries
the usage.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

DEFAULT_TOKENS = 50
CHUNKS = 10


def prompt_words(body: dict[str, Any]) -> int:
    """The words of the prompt: messages' content, ``prompt`` or ``input``."""

    def words(value: Any) -> int:
        if isinstance(value, str):
            return len(value.split())
        if isinstance(value, list):
            return sum(words(v) for v in value)
        if isinstance(value, dict):
            return sum(words(v) for v in value.values())
        return 0

    messages = body.get("messages")
    contents = [m.get("content") for m in messages if isinstance(m, dict)] if messages else []
    return words(contents) + words(body.get("prompt")) + words(body.get("input"))


def completion_tokens(body: dict[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if isinstance(body.get(name), int):
            return int(body[name])
    return DEFAULT_TOKENS


def pieces(tokens: int) -> list[str]:
    """The answer's text (one word per token) in at most `CHUNKS` pieces."""
    count = min(tokens, CHUNKS)
    sizes = [tokens // count + (1 if i < tokens % count else 0) for i in range(count)]
    return ["tok " * size for size in sizes]


class UsageUpstream:
    """The app, the JSON bodies it received, and ``delay`` seconds between streamed chunks."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.bodies: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/completions", self.completions)
        self.app.router.add_post("/v1/responses", self.responses)
        self.app.router.add_get("/v1/models", self.models)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.bodies.append(body)
        return body

    @staticmethod
    def usage(body: dict[str, Any]) -> dict[str, int]:
        prompt, completion = prompt_words(body), completion_tokens(body)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _stream(
        self, request: web.Request, events: list[tuple[str | None, Any]]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, (name, data) in enumerate(events):
            if i and self.delay:
                await asyncio.sleep(self.delay)
            text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
            head = f"event: {name}\n" if name else ""
            await response.write(f"{head}data: {text}\n\n".encode())
        return response

    def _chunks(self, body: dict[str, Any], kind: str, choice: Any) -> list[tuple[str | None, Any]]:
        options = body.get("stream_options")
        include = isinstance(options, dict) and options.get("include_usage") is True
        chunks: list[dict[str, Any]] = [
            {"id": "x", "object": kind, "choices": [choice(text)]}
            for text in pieces(completion_tokens(body))
        ]
        if include:
            chunks = [{**chunk, "usage": None} for chunk in chunks]
            chunks.append({"id": "x", "object": kind, "choices": [], "usage": self.usage(body)})
        return [(None, chunk) for chunk in chunks] + [(None, "[DONE]")]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if body.get("stream") is not True:
            text = "".join(pieces(completion_tokens(body)))
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            answer = {"object": "chat.completion", "choices": [choice], "usage": self.usage(body)}
            return web.json_response(answer)
        events = self._chunks(
            body, "chat.completion.chunk", lambda text: {"index": 0, "delta": {"content": text}}
        )
        return await self._stream(request, events)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        events = self._chunks(body, "text_completion", lambda text: {"index": 0, "text": text})
        return await self._stream(request, events)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        usage = self.usage(body)
        events: list[tuple[str | None, Any]] = [
            ("response.output_text.delta", {"type": "response.output_text.delta", "delta": text})
            for text in pieces(completion_tokens(body))
        ]
        completed = {
            "type": "response.completed",
            "response": {
                "status": "completed",
                "usage": {
                    "input_tokens": usage["prompt_tokens"],
                    "output_tokens": usage["completion_tokens"],
                    "total_tokens": usage["total_tokens"],
                },
            },
        }
        events.append(("response.completed", completed))
        return await self._stream(request, events)
