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
import re
from typing import Any

__all__ = ["top_level_usage"]

_KEY = b'"usage"'
_COLON = re.compile(r"[ \t\r\n]*:[ \t\r\n]*")
_COMMA = re.compile(r"[ \t\r\n]*,")
_CLOSE = re.compile(r"[ \t\r\n]*\}[ \t\r\n]*\Z")  # the answer's closing brace, then nothing
_END = re.compile(r"[ \t\r\n]*\Z")
_decoder = json.JSONDecoder()


def top_level_usage(body: bytes) -> dict[str, Any] | None:
    """The top-level ``usage`` object of the JSON object ``body``, or ``None`` when
    it is not found this way (the caller then parses the whole body)."""
    at = body.rfind(_KEY)
    if at <= 0 or body[at - 1] == 0x5C:  # (a backslash: the quote is inside a string)
        return None
    try:
        text = body[at + len(_KEY) :].decode()
        colon = _COLON.match(text)
        if colon is None:
            return None
        usage, end = _decoder.raw_decode(text, colon.end())
        if not isinstance(usage, dict):
            return None
        if _CLOSE.match(text, end):
            return usage
        comma = _COMMA.match(text, end)
        if comma is None:
            return None
        # More members: they must end the top-level object ("{" stands in for the comma).
        _, length = _decoder.raw_decode("{" + text[comma.end() :])
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return None
    return usage if _END.match(text, comma.end() - 1 + length) else None
