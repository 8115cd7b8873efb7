"""``imitate``'s reading of ChatGPT's answer stream: `ChatGPTAnswer`.

Each message event of ChatGPT's stream carries the whole answer so far in
``message.content.parts[0]``.  Only the assistant's visible text counts; pings,
moderation, the echo of the prompt, tool calls (``recipient`` not ``all``),
hidden messages and non-text content (code, browsing, thoughts) are skipped.
Several assistant text messages in one answer are joined with a blank line.
A moderation event that blocked the answer makes the finish reason
``content_filter``; an ``error`` event is kept in `ChatGPTAnswer.error`.
After `ChatGPTAnswer.continue_answer`, the next message carries on the text so
far (for ``action: "continue"``), whether it repeats that text or not.
"""

from __future__ import annotations

from typing import Any

from gateway.api import SSEEvent, json_loads_upstream
from gateway_plugins.imitate.errors import event_error

__all__ = ["ChatGPTAnswer"]

_FINISH_REASONS = {"stop": "stop", "max_tokens": "length"}


class ChatGPTAnswer:
    """The assistant's answer as ChatGPT's events build it up."""

    __slots__ = (
        "_base",
        "_continued",
        "_message_id",
        "blocked",
        "conversation_id",
        "done",
        "error",
        "finish_type",
        "last_message_id",
        "text",
    )

    def __init__(self) -> None:
        self.text = ""  # the whole answer so far, as ChatGPT last sent it
        self.finish_type: str | None = None  # ``finish_details.type`` once given
        self.blocked = False  # moderation blocked the answer
        self.error: str | None = None
        self.done = False  # ``[DONE]`` was read
        self.conversation_id: str | None = None  # as ChatGPT's events name it
        self.last_message_id: str | None = None  # of the last assistant text message
        self._message_id: str | None = None
        self._base = ""
        self._continued: str | None = None  # the text a continuation carries on

    @property
    def started(self) -> bool:
        """Whether an assistant text message has arrived."""
        return self._message_id is not None

    @property
    def finish_reason(self) -> str:
        """OpenAI's ``finish_reason``: ``length`` for ChatGPT's ``max_tokens``, else ``stop``."""
        if self.blocked:
            return "content_filter"
        return _FINISH_REASONS.get(self.finish_type or "stop", "stop")

    def feed(self, event: SSEEvent) -> bool:
        """Take one event; return whether it was an assistant text message."""
        if event.data.strip() == "[DONE]":
            self.done = True
            return False
        if event.event not in (None, "message"):
            return False  # ping and other named events
        try:
            payload = json_loads_upstream(event.data)
        except ValueError:
            return False
        error = event_error(payload)
        if error is not None:
            self.error = error
            return False
        if not isinstance(payload, dict):
            return False
        if isinstance(payload.get("conversation_id"), str):
            self.conversation_id = payload["conversation_id"]
        if payload.get("type") == "moderation":
            moderation = payload.get("moderation_response")
            self.blocked = self.blocked or (
                isinstance(moderation, dict) and moderation.get("blocked") is True
            )
            return False
        return self._message(payload.get("message"))

    def continue_answer(self) -> None:
        """ChatGPT is asked to continue this answer: its next message carries on the text."""
        self._continued = self.text
        self._message_id = None
        self.done = False
        self.finish_type = None

    def _message(self, message: Any) -> bool:
        text = _assistant_text(message)
        if text is None:
            return False
        assert isinstance(message, dict)
        message_id = self.last_message_id = str(message.get("id"))
        if message_id != self._message_id:
            if self._continued is not None:
                self._base = self._continued
            elif self._message_id is not None and self.text:
                self._base = self.text + "\n\n"
            self._message_id = message_id
        if self._continued and text.startswith(self._continued):
            self.text = text  # the continuation repeats the answer so far
        else:
            self.text = self._base + text
        metadata = message.get("metadata")
        details = metadata.get("finish_details") if isinstance(metadata, dict) else None
        if isinstance(details, dict) and isinstance(details.get("type"), str):
            self.finish_type = details["type"]
        return True


def _assistant_text(message: Any) -> str | None:
    """``parts[0]`` of an assistant text message meant for the user, else ``None``."""
    if not isinstance(message, dict):
        return None
    author = message.get("author")
    content = message.get("content")
    metadata = message.get("metadata")
    if not (isinstance(author, dict) and author.get("role") == "assistant"):
        return None
    if message.get("recipient", "all") not in ("all", None):
        return None
    if isinstance(metadata, dict) and metadata.get("is_visually_hidden_from_conversation"):
        return None
    if not (isinstance(content, dict) and content.get("content_type") == "text"):
        return None
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        return ""
    return parts[0] if isinstance(parts[0], str) else None
