"""``imitate``'s errors: ChatGPT's failures as OpenAI-format errors with fitting statuses.

A ChatGPT error answer (any status but 200, body ``{"detail": ...}``) becomes:

=============  ========  =========================  ===============
ChatGPT        client    ``type``                   ``code``
=============  ========  =========================  ===============
400            400       ``invalid_request_error``  ``bad_request``
401            401       ``authentication_error``   ``unauthorized``
403            403       ``permission_error``       ``forbidden``
404            404       ``not_found_error``        ``not_found``
429            429       ``rate_limit_error``       ``rate_limited``
anything else  502       ``upstream_error``         ``bad_gateway``
=============  ========  =========================  ===============

Other 4xx (405, 413, 422, ...) mean the request the gateway built was refused,
which the client cannot fix: 502 like a 5xx.  The message carries ChatGPT's
``detail`` (a string, an object's ``message``, or FastAPI's list of ``msg``).
An ``error`` event inside a stream becomes 502 before anything was sent, or an
OpenAI stream error event after (`stream_error_event`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from gateway.api import (
    BadGateway,
    BadRequest,
    Forbidden,
    GatewayError,
    NotFound,
    TooManyRequests,
    Unauthorized,
    json_loads_upstream,
)
from gateway_plugins.retry_after import MAX_RETRY_AFTER, retry_after_seconds

__all__ = [
    "ErrorAnswer",
    "UpstreamNotFound",
    "event_error",
    "stream_error_event",
    "upstream_error",
    "upstream_unreadable",
]

# Longer upstream messages are cut: an error body is not a place for a whole page.
_MAX_MESSAGE = 500


class UpstreamNotFound(NotFound):
    """404 with OpenAI's ``not_found_error`` type (the core's `NotFound` says invalid request)."""

    type = "not_found_error"


_BY_STATUS: dict[int, type[GatewayError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: UpstreamNotFound,
    429: TooManyRequests,
}


def upstream_error(status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """The error for a ChatGPT answer with ``status`` (not 200) and ``body``."""
    detail = error_detail(body)
    message = f"ChatGPT answered {status}" + (f": {detail}" if detail else "")
    cls = _BY_STATUS.get(status, BadGateway)
    # SECURITY: the upstream's number, read strictly and clamped, never passed on as it came.
    seconds = retry_after_seconds(headers.get("Retry-After"), MAX_RETRY_AFTER)
    if cls is TooManyRequests and seconds is not None:
        return cls(message, headers={"Retry-After": str(math.ceil(seconds))})
    return cls(message)


def upstream_unreadable(reason: str) -> BadGateway:
    """The error for a ChatGPT answer the gateway cannot convert."""
    return BadGateway(reason)


def error_detail(body: bytes) -> str | None:
    """The readable reason in a ChatGPT error body, if it has one."""
    try:
        parsed = json_loads_upstream(body)
    except ValueError:  # (UnicodeDecodeError is one)
        return None
    if not isinstance(parsed, dict):
        return None
    return _text(parsed.get("detail")) or _text(parsed.get("error"))


def event_error(payload: Any) -> str | None:
    """The error an event of ChatGPT's stream reports, if it is an error event.

    ChatGPT sends ``{"message": null, "conversation_id": ..., "error": "..."}``;
    a message event carries ``"error": null``.
    """
    if not isinstance(payload, dict) or not payload.get("error"):
        return None
    if isinstance(payload.get("message"), dict):
        return None  # a message with a stray error field is still a message
    return _text(payload["error"]) or "ChatGPT reported an error"


def stream_error_event(message: str) -> bytes:
    """An OpenAI stream error event, then ``[DONE]``: the end of a broken stream.

    The OpenAI SDK raises ``APIError`` with ``message`` when it reads it.
    """
    error = {"message": message, "type": BadGateway.type, "code": BadGateway.code}
    data = json.dumps({"error": error}, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\ndata: [DONE]\n\n".encode()


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        text = value
    elif isinstance(value, dict):
        inner = value.get("message")
        text = inner if isinstance(inner, str) else ""
    elif isinstance(value, list):
        text = "; ".join(
            str(item["msg"]) for item in value if isinstance(item, dict) and "msg" in item
        )
    else:
        text = ""
    text = text.strip()
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + "…"
    return text or None


class ErrorAnswer:
    """A ChatGPT error answer's body, read (the first 64 KiB) to build the client's error.

    `feed` holds everything back; at the end it raises the mapped error, which the
    gateway answers cleanly since the client has seen nothing yet.
    """

    __slots__ = ("_body", "headers", "status")

    #: How much of an error body is kept to find its ``detail``.
    LIMIT = 64 * 1024

    def __init__(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self.headers = {k: v for k, v in headers.items() if k.lower() == "retry-after"}
        self._body = bytearray()

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """Keep the start of the body; at the end, raise the error."""
        room = self.LIMIT - len(self._body)
        if room > 0:
            self._body += chunk[:room]
        if final:
            raise upstream_error(self.status, bytes(self._body), self.headers)
        return b""
