"""``imitate``'s requests: an OpenAI chat request checked and turned into a ChatGPT one.

Accepted: ``model`` (required), ``messages`` (required, non-empty; roles
``system``, ``developer`` (as ``system``), ``user`` and ``assistant``; ``content``
a string or an array of ``{"type": "text", "text": ...}`` parts, joined with
newlines), ``stream``, ``stream_options.include_usage`` and ``n`` (1 only).
Refused with 400: anything else in those fields, other content part types
(images, audio, files), ``tool``/``function`` messages and non-empty
``tools``/``functions`` (a ChatGPT account cannot call the client's tools).
Sampling and format options (``temperature``, ``max_tokens``, ...) have no
ChatGPT equivalent and are ignored.

Token counts are estimates (ChatGPT reports none): ``ceil(characters / 4)``,
at least 1 for non-empty text; each prompt message counts at least 1.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs

from gateway.api import BadRequest, estimate_tokens

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "continue_body",
    "conversation_body",
    "parse_chat_request",
]

# OpenAI role -> ChatGPT author role.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@attrs.frozen
class ChatMessage:
    """One message of the conversation, as ChatGPT will see it."""

    role: str  # the ChatGPT author role: system, user or assistant
    text: str


@attrs.frozen
class ChatRequest:
    """What the gateway needs of an OpenAI chat request."""

    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool = False
    include_usage: bool = False

    @property
    def prompt_tokens(self) -> int:
        """The estimated prompt size: each message's estimate, at least 1 each."""
        return sum(max(1, estimate_tokens(len(m.text))) for m in self.messages)


def parse_chat_request(body: Any) -> ChatRequest:
    """Check an OpenAI chat request body; raise `BadRequest` (400) with the first problem."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object (an OpenAI chat request)")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("'model' is required: a model name such as 'gpt-3.5-turbo'")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required: a non-empty array of messages")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise BadRequest(f"'n' must be a positive integer, not {n!r}")
    if n is not None and n > 1:
        raise BadRequest("'n' > 1 is not supported: a ChatGPT account answers one choice")
    for field in ("tools", "functions"):
        if body.get(field):
            raise BadRequest(f"'{field}' is not supported: a ChatGPT account cannot call tools")
    stream = _optional_bool(body, "stream", "'stream'")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    include_usage = _optional_bool(options or {}, "include_usage", "'stream_options.include_usage'")
    return ChatRequest(
        model=model,
        messages=tuple(_message(m, i) for i, m in enumerate(messages)),
        stream=stream,
        include_usage=stream and include_usage,
    )


def _optional_bool(table: dict[str, Any], key: str, name: str) -> bool:
    value = table.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false, not {value!r}")
    return value


def _message(message: Any, index: int) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadRequest(f"'{where}' must be an object with 'role' and 'content'")
    role = message.get("role")
    if role in ("tool", "function"):
        raise BadRequest(f"'{where}.role' {role!r} is not supported: ChatGPT cannot call tools")
    if not isinstance(role, str) or role not in _ROLES:
        roles = ", ".join(repr(r) for r in _ROLES)
        raise BadRequest(f"'{where}.role' must be one of {roles}, not {role!r}")
    return ChatMessage(role=_ROLES[role], text=_content_text(message.get("content"), where))


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{where}.content' must be a string or an array of text parts")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            shown = repr(kind) if isinstance(kind, str) else "without a 'type'"
            raise BadRequest(
                f"'{where}.content[{i}]': content part {shown} is not supported (only 'text' parts)"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"'{where}.content[{i}].text' must be a string")
        texts.append(text)
    return "\n".join(texts)


def conversation_body(request: ChatRequest, slug: str, *, history: bool = False) -> dict[str, Any]:
    """The ChatGPT ``action: "next"`` request for ``request``, answered by model ``slug``.

    Every message gets a new id and the parent is a new id, so each request is a
    new conversation (no ``conversation_id``).  Without ``history``,
    ``history_and_training_disabled`` keeps these conversations out of the
    account's history (and training): API traffic would otherwise pile up in the
    ChatGPT sidebar.
    """
    return {
        "action": "next",
        "messages": [
            {
                "id": str(uuid.uuid4()),
                "author": {"role": message.role},
                "content": {"content_type": "text", "parts": [message.text]},
                "metadata": {},
            }
            for message in request.messages
        ],
        "parent_message_id": str(uuid.uuid4()),
        **_conversation_settings(slug, history),
    }


def continue_body(
    conversation_id: str, last_message_id: str, slug: str, *, history: bool = False
) -> dict[str, Any]:
    """The ChatGPT ``action: "continue"`` request: go on with an answer cut for length.

    It names the conversation and the answer's last message, and no messages.
    """
    return {
        "action": "continue",
        "conversation_id": conversation_id,
        "parent_message_id": last_message_id,
        **_conversation_settings(slug, history),
    }


def _conversation_settings(slug: str, history: bool) -> dict[str, Any]:
    return {
        "model": slug,
        "timezone_offset_min": 0,
        "history_and_training_disabled": not history,
        "conversation_mode": {"kind": "primary_assistant"},
    }
