"""``imitate``'s answers: ChatGPT's event stream as OpenAI ``chat.completion`` output.

ChatGPT sends the whole answer so far in every message event; OpenAI clients
expect only the new text in each ``chat.completion.chunk``.  `DeltaTracker`
decides what to send, and `ChunkStream` (``stream: true``) and `Completion`
(one ``chat.completion`` object) turn the bytes of a ChatGPT stream, read by
`ChatGPTAnswer`, into the bytes of the answer.

Both may be allowed to continue an answer ChatGPT cut for length (``continues``
times at most): at its end they stop short and note `pending_continuation`; the
plugin then asks ChatGPT to go on (`gateway_plugins.imitate.continuation`) and feeds them the
continuation's stream, which carries on the same answer.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.api import BadGateway, SSEEvent, SSEParser, Usage, estimate_tokens
from gateway_plugins.imitate.answer import ChatGPTAnswer
from gateway_plugins.imitate.errors import stream_error_event

__all__ = ["ChunkStream", "Completion", "DeltaTracker"]


class DeltaTracker:
    """What to send of each new cumulative text, given what the client already has.

    The client cannot take back text it received: ``sent`` only ever grows.
    ``mark`` is the upstream text the client's copy stands for (``sent`` itself
    until the upstream rewrites text already sent).  For each new cumulative
    ``text``:

    1. ``text`` starts with ``sent``: send ``text[len(sent):]`` (the usual case,
       and the upstream coming back to exactly what the client has);
    2. else ``text`` starts with ``mark``: send ``text[len(mark):]`` (the text
       grew after an earlier rewrite);
    3. else ``mark`` starts with ``text``: the text shrank; send nothing, and
       nothing again until it grows past ``mark``;
    4. else the upstream rewrote text already sent: send nothing, and ``mark``
       becomes ``text``, from which the stream goes on.

    So no text is ever sent twice, text that only grows and shrinks is sent
    exactly, and a rewrite costs at most the growth that arrived in the same
    event.  (Waiting instead until the text is longer than ``sent`` would drop as
    many characters of new text as the rewrite removed.)
    """

    __slots__ = ("mark", "sent")

    def __init__(self) -> None:
        self.sent = ""
        self.mark = ""

    def advance(self, text: str) -> str:
        """The text to send for the new cumulative ``text`` (maybe ``""``)."""
        if text.startswith(self.sent):
            delta = text[len(self.sent) :]
        elif text.startswith(self.mark):
            delta = text[len(self.mark) :]
        elif self.mark.startswith(text):
            return ""
        else:
            delta = ""
        self.mark = text
        self.sent += delta
        return delta


class _Conversion:
    """What both answer forms share: the parser, the answer and the identity fields."""

    def __init__(
        self, completion_id: str, created: int, model: str, prompt_tokens: int, continues: int
    ) -> None:
        self.id = completion_id
        self.created = created
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.answer = ChatGPTAnswer()
        self._parser = SSEParser()
        self.continues_left = continues
        #: ``(conversation_id, last message id)`` of an answer cut for length, to continue.
        self.pending_continuation: tuple[str, str] | None = None

    def _continue_now(self) -> bool:
        """At the end of an answer cut for length: whether to have ChatGPT go on (noted)."""
        answer = self.answer
        if self.continues_left <= 0 or answer.error is not None:
            return False
        if answer.finish_type != "max_tokens" or answer.conversation_id is None:
            return False
        assert answer.last_message_id is not None  # a finish type comes with a message
        self.pending_continuation = (answer.conversation_id, answer.last_message_id)
        return True

    def continue_answer(self) -> tuple[str, str]:
        """Take the continuation's stream from here on; return where it continues from."""
        where = self.pending_continuation
        assert where is not None
        self.pending_continuation = None
        self.continues_left -= 1
        self.answer.continue_answer()
        self._parser = SSEParser()
        return where

    @property
    def usage(self) -> Usage:
        """The estimated usage of the answer so far."""
        return Usage(self.prompt_tokens, estimate_tokens(len(self.answer.text)), estimated=True)

    def usage_object(self) -> dict[str, int]:
        usage = self.usage
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }

    def _events(self, chunk: bytes, final: bool) -> list[SSEEvent]:
        parsed = self._parser.feed(chunk) if chunk else []
        if final:
            parsed += self._parser.flush()
        return [event for event, _ in parsed if event is not None]

    def _incomplete(self) -> str | None:
        """Why the answer cannot be finished at the upstream's end, if it cannot."""
        if self.answer.error is not None:
            return f"ChatGPT: {self.answer.error}"
        if not self.answer.started:
            return "ChatGPT's answer had no message"
        if not self.answer.done and self.answer.finish_type is None:
            return "ChatGPT's answer ended before it was complete"
        return None


class ChunkStream(_Conversion):
    """``stream: true``: ChatGPT's stream as ``chat.completion.chunk`` events.

    Every chunk has the same ``id``, ``created`` and ``model`` (the name the
    client asked for).  The first carries ``delta.role``; the last ``finish_reason``;
    with ``include_usage`` a usage chunk (no choices) follows; then ``[DONE]``.
    An error before the first chunk raises `BadGateway` (the client gets a 502);
    after it, the stream ends with an error event and ``[DONE]``.
    """

    def __init__(
        self,
        completion_id: str,
        created: int,
        model: str,
        prompt_tokens: int,
        include_usage: bool,
        continues: int = 0,
    ) -> None:
        super().__init__(completion_id, created, model, prompt_tokens, continues)
        self.include_usage = include_usage
        self.delta = DeltaTracker()
        self.began = False  # the first chunk was made
        self.ended = False  # ``[DONE]`` was made

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """Convert the next bytes of ChatGPT's stream (``final``: it ended cleanly)."""
        out: list[bytes] = []
        for event in self._events(chunk, final):
            if self.ended or self.pending_continuation is not None:
                break
            if self.answer.feed(event):
                text = self.delta.advance(self.answer.text)
                if not self.began:
                    self.began = True
                    out.append(self._chunk({"role": "assistant", "content": text}))
                elif text:
                    out.append(self._chunk({"content": text}))
            if self.answer.done and self._continue_now():
                break
            if self.answer.error is not None or self.answer.done:
                out.append(self._end())
        if final and not self.ended and self.pending_continuation is None:
            out.append(self._end())
        return b"".join(out)

    def fail(self, problem: str) -> bytes:
        """End the answer with ``problem`` (a continuation that could not be had)."""
        self.ended = True
        if not self.began:
            raise BadGateway(problem)
        return stream_error_event(problem)

    def _end(self) -> bytes:
        self.ended = True
        problem = self._incomplete()
        if problem is not None:
            if not self.began:
                raise BadGateway(problem)
            return stream_error_event(problem)
        out = [self._chunk({}, self.answer.finish_reason)]
        if self.include_usage:
            out.append(self._event({**self._head(), "choices": [], "usage": self.usage_object()}))
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, str], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        body: dict[str, Any] = {**self._head(), "choices": [choice]}
        if self.include_usage:
            body["usage"] = None
        return self._event(body)

    @staticmethod
    def _event(body: dict[str, Any]) -> bytes:
        return b"data: " + _dumps(body) + b"\n\n"


class Completion(_Conversion):
    """``stream: false``: ChatGPT's stream read whole into one ``chat.completion`` object.

    `feed` returns nothing until the end; an error raises `BadGateway` at once
    (nothing has been sent, so the client gets a clean 502).
    """

    def __init__(
        self, completion_id: str, created: int, model: str, prompt_tokens: int, continues: int = 0
    ) -> None:
        super().__init__(completion_id, created, model, prompt_tokens, continues)
        self.ended = False  # the answer was made

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """Take the next bytes of ChatGPT's stream; at the end, return the whole answer."""
        if self.ended or self.pending_continuation is not None:
            return b""
        for event in self._events(chunk, final):
            self.answer.feed(event)
            if self.answer.error is not None or self.answer.done:
                break
        if self.answer.error is not None:
            raise BadGateway(f"ChatGPT: {self.answer.error}")
        if not (final or self.answer.done):
            return b""
        if self.answer.done and self._continue_now():
            return b""
        self.ended = True
        problem = self._incomplete()
        if problem is not None:
            raise BadGateway(problem)
        message = {"role": "assistant", "content": self.answer.text, "refusal": None}
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.answer.finish_reason,
        }
        return _dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [choice],
                "usage": self.usage_object(),
            }
        )

    def fail(self, problem: str) -> bytes:
        """End the answer with ``problem``: nothing was sent, so the client gets a 502."""
        self.ended = True
        raise BadGateway(problem)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
