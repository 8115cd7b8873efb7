"""The gateway's errors and the JSON envelope every answer of its own uses.

Every error the gateway makes itself is ``{"error": {"message", "type", "code"}}``
(the OpenAI envelope) with a fitting status.  Third-party errors are wrapped
(``raise UpstreamUnavailable(...) from exc``); messages never carry secrets.
"""

from __future__ import annotations

import json
from typing import ClassVar

from aiohttp import web


class GatewayError(Exception):
    """Base of every error the gateway turns into an HTTP answer."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "gateway_error"
    code: ClassVar[str] = "internal_error"
    #: Close the connection after answering (the rest of the request cannot be trusted).
    close_connection: ClassVar[bool] = False

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        """This error as a JSON response in the envelope."""
        response = error_response(self.status, self.message, self.type, self.code, self.headers)
        if self.close_connection:
            response.force_close()
        return response


class BadRequest(GatewayError):
    status, type, code = 400, "invalid_request_error", "bad_request"


class Unauthorized(GatewayError):
    status, type, code = 401, "authentication_error", "unauthorized"


class Forbidden(GatewayError):
    status, type, code = 403, "permission_error", "forbidden"


class NotFound(GatewayError):
    status, type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowed(GatewayError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class RequestTimeout(GatewayError):
    status, type, code = 408, "invalid_request_error", "request_timeout"
    close_connection = True


class PayloadTooLarge(GatewayError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"
    close_connection = True

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes")


class ExpectationFailed(GatewayError):
    status, type, code = 417, "invalid_request_error", "expectation_failed"
    close_connection = True


class UnsupportedMediaType(GatewayError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class TooManyRequests(GatewayError):
    status, type, code = 429, "rate_limit_error", "rate_limited"


class HeadersTooLarge(GatewayError):
    status, type, code = 431, "invalid_request_error", "headers_too_large"


class HttpVersionNotSupported(GatewayError):
    status, type, code = 505, "invalid_request_error", "http_version_not_supported"
    close_connection = True


class BadGateway(GatewayError):
    status, type, code = 502, "upstream_error", "bad_gateway"


class ServiceUnavailable(GatewayError):
    status, type, code = 503, "upstream_error", "service_unavailable"


class GatewayTimeout(GatewayError):
    status, type, code = 504, "upstream_error", "gateway_timeout"


class UpstreamError(BadGateway):
    """An upstream failed to give an answer (as opposed to a plugin refusing one).

    ``kind`` says how, for logs and metrics: ``connect``, ``proxy``, ``failed``
    (before the response head), ``aborted`` (the body broke off).
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamTimeout(UpstreamError):
    """An upstream went silent: ``timeout`` before the head, ``idle_timeout`` in the body."""

    status, type, code = 504, "upstream_error", "gateway_timeout"


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` lists every one, with its key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def error_body(message: str, type_: str, code: str) -> bytes:
    """The envelope as bytes."""
    return json.dumps({"error": {"message": message, "type": type_, "code": code}}).encode()


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A JSON error response in the envelope."""
    return web.Response(
        status=status,
        body=error_body(message, type_, code),
        content_type="application/json",
        headers=headers,
    )
