"""The simulated answers: deterministic text derived from the prompt, and token counts."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

# The fixed words that follow the echoed prompt in every answer.
TAIL = ("This", "is", "a", "simulated", "answer.")


def answer_words(prompt: str, words: int | None = None) -> list[str]:
    """The words of the answer to ``prompt``: ``You said: <prompt>`` and `TAIL`.

    With ``words`` the answer is exactly that many words (at least one), the same
    words repeated as often as needed, so benchmarks can ask for long streams.
    """
    base = ["You", "said:", *prompt.split(), *TAIL]
    if words is None:
        return base
    return list(itertools.islice(itertools.cycle(base), max(words, 1)))


def answer_text(prompt: str, words: int | None = None) -> str:
    """The whole answer to ``prompt``, its words joined by single spaces."""
    return " ".join(answer_words(prompt, words))


def count_tokens(text: str) -> int:
    """The simulators' token count: the number of whitespace-separated words."""
    return len(text.split())


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_part_texts(content))
    return ""


def _part_texts(parts: Iterable[Any]) -> Iterable[str]:
    for part in parts:
        if isinstance(part, str):
            yield part
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            yield part["text"]


def chatgpt_prompt(body: Any) -> str:
    """The prompt of a ChatGPT conversation request: ``content.parts[0]`` of its message.

    The message is the last one whose author is ``user`` (``messages[0]`` in a usual
    request), else ``messages[0]``. Anything missing or of the wrong type gives an
    empty prompt: the simulator is lenient so that tests can send partial bodies.
    """
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return ""
    users = [m for m in messages if isinstance(m, dict) and _role(m) == "user"]
    message = users[-1] if users else messages[0]
    try:
        part = message["content"]["parts"][0]
    except (KeyError, IndexError, TypeError):
        return ""
    return part if isinstance(part, str) else ""


def _role(message: dict[str, Any]) -> Any:
    author = message.get("author")
    return author.get("role", "user") if isinstance(author, dict) else "user"


def openai_prompt(messages: Any) -> str:
    """The prompt of an OpenAI chat request: the text of its last ``user`` message."""
    if not isinstance(messages, list):
        return ""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return content_text(users[-1].get("content")) if users else ""
