"""How each simulated upstream scopes its routes and words its errors."""

from __future__ import annotations

from typing import Any

from gateway.testing.guard import Flavor

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}

_OPENAI_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    429: "rate_limit_exceeded",
}


def chatgpt_error(status: int, message: str) -> dict[str, Any]:
    """A ChatGPT web backend error body: ``{"detail": message}`` (the status is not in it)."""
    return {"detail": message}


def openai_error(status: int, message: str) -> dict[str, Any]:
    """An OpenAI API error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": None,
            "code": _OPENAI_CODES.get(status),
        }
    }


CHATGPT = Flavor(
    prefix="/backend-api",
    error_body=chatgpt_error,
    unauthorized="Unauthorized: an 'Authorization: Bearer <access token>' header is required",
)

OPENAI = Flavor(
    prefix="/v1",
    error_body=openai_error,
    unauthorized=(
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    ),
)
