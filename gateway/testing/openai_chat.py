"""``POST /v1/chat/completions``: a ``chat.completion`` object, or its chunk stream.

The answer is ``You said: <last user message>`` and a few fixed words (see
`gateway.testing.text`); ``max_tokens`` / ``max_completion_tokens`` cut it, with
``finish_reason: "length"``. Tokens are whitespace-separated words.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import attrs
from aiohttp import web

from gateway.testing.flavors import OPENAI
from gateway.testing.sse import EventStream
from gateway.testing.text import answer_words, content_text, count_tokens, openai_prompt

FINGERPRINT = "fp_simulated"


def _token_limit(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@attrs.frozen
class Completion:
    """One answer: its id, model, words, finish reason and usage."""

    model: str
    words: list[str]
    finish_reason: str
    prompt_tokens: int
    id: str = attrs.field(factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = attrs.field(factory=lambda: int(time.time()))

    @classmethod
    def answer(cls, body: dict[str, Any]) -> Completion:
        """The completion answering a validated chat request ``body``."""
        messages: list[Any] = body["messages"]
        words = answer_words(openai_prompt(messages))
        limit = _token_limit(body)
        cut = limit is not None and len(words) > limit
        prompt = " ".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))
        return cls(
            model=body["model"],
            words=words[:limit] if cut else words,
            finish_reason="length" if cut else "stop",
            prompt_tokens=count_tokens(prompt),
        )

    @property
    def usage(self) -> dict[str, int]:
        """The ``usage`` object."""
        completion = len(self.words)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def whole(self) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        message = {"role": "assistant", "content": " ".join(self.words), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None}
        return self._envelope("chat.completion", [{**choice, "finish_reason": self.finish_reason}])

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        """One ``chat.completion.chunk`` with a single choice."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", [choice])

    def chunks(self, include_usage: bool) -> list[dict[str, Any]]:
        """Every chunk of the stream: role, one per word, finish, then usage if asked."""
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": w if i == 0 else f" {w}"} for i, w in enumerate(self.words)]
        chunks = [self.chunk(d) for d in deltas] + [self.chunk({}, self.finish_reason)]
        if include_usage:
            chunks = [{**c, "usage": None} for c in chunks]
            chunks.append({**self._envelope("chat.completion.chunk", []), "usage": self.usage})
        return chunks

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if kind == "chat.completion":
            body["usage"] = self.usage
        return body


def validate(body: Any) -> str | None:
    """What is wrong with a chat request ``body``, or ``None`` when it can be answered."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    return None


@attrs.frozen
class ChatCompletions:
    """The chat completions handler; ``delay`` seconds separate streamed chunks."""

    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one chat completion request, streaming when ``"stream": true``."""
        try:
            body = await request.json()
        except ValueError:
            return OPENAI.error(400, "We could not parse the JSON body of your request.")
        problem = validate(body)
        if problem is not None:
            return OPENAI.error(400, problem)
        completion = Completion.answer(body)
        if body.get("stream") is not True:
            return web.json_response(completion.whole())
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        stream = await EventStream.open(request, self.delay)
        for chunk in completion.chunks(include_usage):
            await stream.send(chunk)
        return await stream.done()
