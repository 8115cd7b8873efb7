"""``POST /backend-api/conversation``: the ChatGPT answer stream and its failure modes.

Each message event carries the cumulative text so far in ``content.parts[0]``, one
more word per event; a ``ping`` event follows the first, a moderation event precedes
the final ``finished_successfully`` message, and ``data: [DONE]`` ends the stream.

A failure mode is chosen by the ``X-Sim-Fail`` header, else the body field
``sim_fail``, else a ``[sim-fail:MODE]`` marker in the prompt (which survives any
request rewriting by the gateway). A ``[sim-status:NNN]`` marker answers that status.

``action: "continue"`` (what a client sends after an answer cut for length) needs
the ``conversation_id`` of an answer this simulator gave and, as
``parent_message_id``, the id of its last message; it streams `CONTINUATION`, the
new text only, in a message of its own.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import attrs
from aiohttp import web

from gateway.testing.flavors import CHATGPT
from gateway.testing.guard import simulated_error, simulated_status
from gateway.testing.sse import EventStream
from gateway.testing.text import answer_words, chatgpt_prompt

SIM_FAIL = "X-Sim-Fail"
FAIL_MODES = ("error-event", "max-tokens", "die", "rewrite")
ERROR_MESSAGE = "Something went wrong"
DEFAULT_MODEL = "text-davinci-002-render-sha"
# The cumulative texts of the "rewrite" mode: the third changes earlier text, the last shrinks.
REWRITE_PARTS = ("Hello", "Hello wor", "Hello, world", "Hello, world!!!", "Hello, world!")

#: The text of every continued answer.
CONTINUATION = "And so the answer goes on to its end."

_FAIL_MARKER = re.compile(r"\[sim-fail:([a-z-]+)\]")
_STATUS_MARKER = re.compile(r"\[sim-status:(\d{3})\]")


def fail_mode(request: web.Request, body: Any, prompt: str) -> str | None:
    """The failure mode asked for by header, body field or prompt marker, if any."""
    if SIM_FAIL in request.headers:
        return request.headers[SIM_FAIL].strip().lower()
    if isinstance(body, dict) and isinstance(body.get("sim_fail"), str):
        return str(body["sim_fail"]).strip().lower()
    match = _FAIL_MARKER.search(prompt)
    return match.group(1) if match else None


def cumulative(words: list[str]) -> list[str]:
    """The texts of successive events, each one word longer than the last."""
    return [" ".join(words[: i + 1]) for i in range(len(words))]


@attrs.frozen
class Turn:
    """The identity of one streamed assistant message."""

    conversation_id: str
    parent_id: str
    model: str
    message_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    created: float = attrs.field(factory=time.time)

    @classmethod
    def of(cls, body: Any) -> Turn:
        """The turn answering a conversation request ``body`` (ids made where missing)."""
        fields = body if isinstance(body, dict) else {}

        def given(name: str) -> str | None:
            value = fields.get(name)
            return value if isinstance(value, str) and value else None

        return cls(
            conversation_id=given("conversation_id") or str(uuid.uuid4()),
            parent_id=given("parent_message_id") or str(uuid.uuid4()),
            model=given("model") or DEFAULT_MODEL,
        )

    def message(self, text: str, finish: str | None = None) -> dict[str, Any]:
        """A message event: ``in_progress``, or final when ``finish`` (a finish type) is given."""
        metadata: dict[str, Any] = {"message_type": "next", "model_slug": self.model}
        metadata["parent_id"] = self.parent_id
        if finish is not None:
            metadata["finish_details"] = {"type": finish}
            metadata["is_complete"] = True
        message = {
            "id": self.message_id,
            "author": {"role": "assistant", "name": None, "metadata": {}},
            "create_time": self.created,
            "update_time": None,
            "content": {"content_type": "text", "parts": [text]},
            "status": "in_progress" if finish is None else "finished_successfully",
            "end_turn": None if finish is None else finish == "stop",
            "weight": 1.0,
            "metadata": metadata,
            "recipient": "all",
        }
        return {"message": message, "conversation_id": self.conversation_id, "error": None}

    def moderation(self) -> dict[str, Any]:
        """The moderation event ChatGPT sends before the final message."""
        return {
            "type": "moderation",
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "is_completion": True,
            "moderation_response": {
                "flagged": False,
                "blocked": False,
                "moderation_id": f"modr-{self.message_id[:8]}",
            },
        }


@attrs.frozen
class ConversationStream:
    """The conversation handler; ``delay`` spaces events, ``words`` fixes the answer length."""

    delay: float = 0.0
    words: int | None = None
    #: The id of the last message of each conversation answered, for ``continue``.
    last_messages: dict[str, str] = attrs.field(factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one conversation request with an event stream."""
        try:
            body = await request.json()
        except ValueError:
            return CHATGPT.error(400, "the request body is not valid JSON")
        prompt = chatgpt_prompt(body)
        status_match = _STATUS_MARKER.search(prompt)
        status = simulated_status(status_match.group(1)) if status_match else None
        if status is not None:
            return simulated_error(CHATGPT, status)
        mode = fail_mode(request, body, prompt)
        if mode is not None and mode not in FAIL_MODES:
            return CHATGPT.error(400, f"unknown {SIM_FAIL} mode {mode!r}; one of {FAIL_MODES}")
        continuing = isinstance(body, dict) and body.get("action") == "continue"
        if continuing:
            cid, parent = body.get("conversation_id"), body.get("parent_message_id")
            if cid not in self.last_messages:
                return CHATGPT.error(404, f"conversation {cid!r} not found")
            if parent != self.last_messages[cid]:
                return CHATGPT.error(400, "continue from the conversation's last message")
        turn = Turn.of(body)
        self.last_messages[turn.conversation_id] = turn.message_id
        stream = await EventStream.open(request, self.delay, compact=False)
        if mode == "error-event":
            await stream.send({"message": None, "conversation_id": None, "error": ERROR_MESSAGE})
            return await stream.done()
        words = CONTINUATION.split() if continuing else answer_words(prompt, self.words)
        texts = list(REWRITE_PARTS) if mode == "rewrite" else cumulative(words)
        if mode == "die":
            texts = texts[: max(1, len(texts) // 2)]
        for index, text in enumerate(texts):
            await stream.send(turn.message(text))
            if index == 0:
                await stream.send("{}", event="ping")
        if mode == "die":
            return await stream.die()
        await stream.send(turn.moderation())
        final = texts[-1] if texts else ""
        await stream.send(turn.message(final, "max_tokens" if mode == "max-tokens" else "stop"))
        return await stream.done()
