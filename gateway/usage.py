"""Counting the tokens one answer used: for ``Exchange.usage``, token quotas and metrics.

In order of preference:

1. ``Exchange.usage``, when a plugin set it (``imitate`` counts its own);
2. the upstream's ``usage`` (``total_tokens``, else ``prompt_tokens`` plus
   ``completion_tokens``; ``input_tokens`` plus ``output_tokens`` for the
   Responses API), from a JSON body or from a streamed event that carries it
   (OpenAI's ``stream_options.include_usage`` chunk);
3. an estimate from the streamed text: OpenAI's ``choices[*].delta.content``
   pieces (and tool-call arguments), ChatGPT's final ``message.content.parts[0]``
   (cumulative, so only its last value per message counts), or a JSON answer's
   ``choices[*].message.content``.  Estimated tokens are ``ceil(characters / 4)``,
   OpenAI's rule of thumb for English text; the prompt is not counted.

JSON bodies are buffered up to `MAX_BODY` bytes (decompressed from gzip or
deflate first), beyond which the meter gives up and counts nothing.  Their
top-level ``usage`` is read without parsing the rest (`gateway.usage_scan`);
the whole body is parsed only when that finds none.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import attrs

from gateway.sse import SSEEvent
from gateway.usage_scan import top_level_usage


@attrs.define
class Usage:
    """Tokens one request consumed, as the upstream reported or a plugin counted."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Counted from the text (about four characters a token), not reported by the upstream.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


__all__ = [
    "MAX_BODY",
    "TokenMeter",
    "estimate_tokens",
    "prompt_tokens",
    "reported_usage",
    "usage_of",
    "usage_tokens",
]

# The request fields whose text the model reads: chat and ChatGPT messages, legacy
# and Responses API prompts, instructions, and tool definitions.
_PROMPT_FIELDS = ("messages", "prompt", "input", "instructions", "system", "tools", "functions")

#: The most bytes of a JSON answer kept to read its ``usage``.
MAX_BODY = 1024 * 1024


def estimate_tokens(characters: int) -> int:
    """The token estimate for ``characters`` of text: one token per four characters."""
    return math.ceil(characters / 4)


def prompt_tokens(body: Any) -> int:
    """The estimated tokens of a JSON request's prompt (characters / 4, rounded up).

    Inline data (``data:`` URLs: images, audio) is not text and is not counted.
    """
    if not isinstance(body, dict):
        return 0
    return estimate_tokens(sum(_characters(body.get(field)) for field in _PROMPT_FIELDS))


def _characters(value: Any) -> int:
    if isinstance(value, str):
        return 0 if value.startswith("data:") else len(value)
    if isinstance(value, list):
        return sum(_characters(item) for item in value)
    if isinstance(value, dict):
        return sum(_characters(item) for item in value.values())
    return 0


def usage_tokens(usage: Any) -> int | None:
    """The total of an OpenAI ``usage`` object, or ``None`` when it holds no count."""
    if not isinstance(usage, dict):
        return None
    total = _count(usage.get("total_tokens"))
    if total is not None:
        return total
    for names in (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens")):
        counts = [c for c in (_count(usage.get(name)) for name in names) if c is not None]
        if counts:
            return sum(counts)
    return None


_SPLITS = (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens"))


def usage_of(usage: Any) -> Usage | None:
    """An OpenAI ``usage`` object as a `Usage` (prompt and completion; input and output
    for the Responses API), or ``None`` when it holds neither count."""
    if not isinstance(usage, dict):
        return None
    for prompt, completion in (
        ("prompt_tokens", "completion_tokens"),
        ("input_tokens", "output_tokens"),
    ):
        counts = _count(usage.get(prompt)), _count(usage.get(completion))
        if counts != (None, None):
            return Usage(counts[0] or 0, counts[1] or 0)
    total = _count(usage.get("total_tokens"))
    return None if total is None else Usage(0, total)


def reported_usage(body: bytes) -> Usage | None:
    """The upstream's own count in a whole, uncompressed JSON answer: its top-level
    ``usage`` (`top_level_usage`, no full parse), or ``None`` when that holds no count."""
    usage = top_level_usage(body)
    return None if usage is None else usage_of(usage)


def _count(value: Any) -> int | None:
    # (``type ... is int``: JSON's numbers are plain ints, and a bool is no count.)
    return value if type(value) is int and value >= 0 else None


class TokenMeter:
    """Watches one answer's body (``feed``, ``finish``) or events (``event``)."""

    __slots__ = (
        "_buffer",
        "_characters",
        "_decoder",
        "_parts",
        "_size",
        "reported",
        "reported_usage",
        "streamed",
    )

    def __init__(self, content_type: str, content_encoding: str = "") -> None:
        #: The upstream's own count, once seen.
        self.reported: int | None = None
        #: The upstream's own usage, split into prompt and completion, once seen.
        self.reported_usage: Usage | None = None
        self._characters = 0
        # ChatGPT message id -> length of its text so far; made for the first such message
        # (an empty dict per open stream is 64 bytes, kept while the stream lasts).
        self._parts: dict[str, int] | None = None
        media = content_type.partition(";")[0].strip().lower()
        #: Whether the answer is an event stream (read with `event`, not `feed`).
        self.streamed = media == "text/event-stream"
        buffering = media == "application/json" or media.endswith("+json")
        # The JSON body's pieces as they came (joined once, at the end), and their size.
        self._buffer: list[bytes] | None = [] if buffering else None
        self._size = 0
        self._decoder: Any = None
        if buffering and content_encoding:
            encoding = content_encoding.strip().lower()
            if encoding in ("gzip", "x-gzip", "deflate"):
                self._decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, told by the header
            elif encoding not in ("", "identity"):
                self._buffer = None  # br, zstd: not worth a dependency

    @property
    def tokens(self) -> int:
        """The upstream's count if it gave one, else the estimate from the text."""
        if self.reported is not None:
            return self.reported
        return self.estimated

    def usage(self, prompt_estimate: int = 0) -> Usage:
        """The answer's `Usage`: the upstream's, else estimated (with ``prompt_estimate``)."""
        if self.reported_usage is not None:
            return self.reported_usage
        return Usage(prompt_estimate, self.estimated, estimated=True)

    @property
    def estimated(self) -> int:
        """The answer's tokens estimated from its text (the prompt not counted)."""
        parts = sum(self._parts.values()) if self._parts is not None else 0
        return estimate_tokens(self._characters + parts)

    def feed(self, chunk: bytes) -> None:
        """Keep a chunk of a JSON body (until `MAX_BODY`, then give up)."""
        if self._buffer is None:
            return
        try:
            data = self._decoder.decompress(chunk, MAX_BODY) if self._decoder else chunk
        except zlib.error:
            self._buffer = None
            return
        self._size += len(data)
        if self._size > MAX_BODY or (self._decoder is not None and self._decoder.unconsumed_tail):
            self._buffer = None
            return
        self._buffer.append(data)

    def finish(self) -> None:
        """Read the buffered JSON body, if any: its top-level ``usage`` when it has
        one (`top_level_usage`, no full parse), else the whole of it."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)  # (one piece: that piece itself, not a copy)
        self._buffer = None
        usage = top_level_usage(data)
        if usage is not None and self._report(usage):
            return  # the upstream's count: no text to estimate from
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
            body = None
        if isinstance(body, dict):
            self._read(body, streamed=False)

    def event(self, event: SSEEvent) -> bool:
        """Read one server-sent event of a streamed answer.

        Returns whether it was a completion stream's usage chunk (a ``usage``
        and no choices), the one ``stream_options.include_usage`` adds.
        """
        data = event.data
        if not data.startswith("{"):
            return False  # "[DONE]", pings
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):
            return False
        if not isinstance(body, dict):
            return False
        self._read(body, streamed=True)
        return body.get("choices") == [] and usage_tokens(body.get("usage")) is not None

    def _read(self, body: dict[str, Any], streamed: bool) -> None:
        usages = [body.get("usage")]
        response = body.get("response")  # the Responses API's final event
        if isinstance(response, dict):
            usages.append(response.get("usage"))
        for usage in usages:
            self._report(usage)
        choices = body.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._characters += _choice_characters(choice, streamed)
        message = body.get("message")
        if isinstance(message, dict):
            self._read_chatgpt(message)

    def _report(self, usage: Any) -> bool:
        """Take the upstream's ``usage`` if it holds a count; whether it did."""
        split = usage_of(usage)  # (None exactly when usage_tokens is: the same counts)
        if split is None:
            return False
        total = _count(usage.get("total_tokens"))
        self.reported = split.total_tokens if total is None else total
        self.reported_usage = split
        return True

    def _read_chatgpt(self, message: dict[str, Any]) -> None:
        author = message.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        content = message.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if role in ("user", "system") or not isinstance(parts, list) or not parts:
            return
        if isinstance(parts[0], str):
            if self._parts is None:
                self._parts = {}
            self._parts[str(message.get("id", ""))] = len(parts[0])


def _choice_characters(choice: dict[str, Any], streamed: bool) -> int:
    """The characters of text one choice carries (a delta piece, or a whole message)."""
    message = choice.get("delta" if streamed else "message")
    count = 0
    if isinstance(choice.get("text"), str):  # the legacy completions API
        count += len(choice["text"])
    if not isinstance(message, dict):
        return count
    if isinstance(message.get("content"), str):
        count += len(message["content"])
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str):
                count += len(arguments)
    return count
