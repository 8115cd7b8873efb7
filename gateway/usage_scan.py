"""Finding a JSON answer's top-level ``usage`` object without parsing the whole answer.

Metering a small chat completion with ``json.loads`` cost about 40,000 instructions
(most of the token meter's cost, callgrind), for the few numbers of its ``usage``.
The upstreams put ``usage`` near the end of the answer (OpenAI's chat and legacy
completions, embeddings, the Responses API), so the meter reads from the last
``"usage":`` key onwards only, and takes it when what follows proves the key a
member of the top-level object: its value is an object, and the members after it
(if any) end the body with the object's closing brace.  Since an object's closing
brace is its own, the object that holds the key is then the answer itself.
Anything else (no such key, a key escaped inside a string, one nested deeper, a
torn body) gives ``None``, and the meter parses the whole answer as before.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["top_level_usage"]

_KEY = b'"usage"'
_SPACE = " \t\r\n"
_decoder = json.JSONDecoder()


def top_level_usage(body: bytes) -> dict[str, Any] | None:
    """The top-level ``usage`` object of the JSON object ``body``, or ``None`` when
    it is not found this way (the caller then parses the whole body)."""
    at = body.rfind(_KEY)
    if at <= 0 or body[at - 1] == 0x5C:  # (a backslash: the quote is inside a string)
        return None
    try:
        text = body[at + len(_KEY) :].decode()
        start = _skip_space(text, 0)
        if text[start : start + 1] != ":":
            return None
        usage, end = _decoder.raw_decode(text, _skip_space(text, start + 1))
        end = _skip_space(text, end)
        if text[end : end + 1] == ",":  # more members: they must end the top-level object
            _, length = _decoder.raw_decode("{" + text[end + 1 :])
            end += length  # ("{" stands in for the comma)
        elif text[end : end + 1] == "}":
            end += 1
        else:
            return None
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return None
    if _skip_space(text, end) != len(text) or not isinstance(usage, dict):
        return None
    return usage


def _skip_space(text: str, at: int) -> int:
    """The index of the first character at or after ``at`` that is not JSON whitespace."""
    return len(text) - len(text[at:].lstrip(_SPACE))
