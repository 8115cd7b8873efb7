"""The plugin API: everything a plugin may import from the gateway, and nothing else.

This module is the stable surface for plugin authors (``docs/plugins.md``).  Its
version, `API_VERSION`, follows semantic versioning: a name in ``__all__`` keeps
its meaning within a major version, and a new name raises the minor one.  The
built-in plugins (``gateway_plugins``) import only this module from the gateway,
and CI holds them to it (``lint-imports``, ``[tool.importlinter]``).

Everything here is re-exported from the engine module that owns it; importing
those modules directly is not supported and may break in any release.
"""

from __future__ import annotations

from typing import Any

import structlog

from gateway.config import GatewayConfig, RouteConfig, UpstreamConfig
from gateway.config_converter import structure
from gateway.config_types import (
    HTTP_METHODS,
    Bytes,
    HttpUrl,
    NonNegativeInt,
    PositiveInt,
    PositiveSeconds,
    ProxyUrl,
    Range,
    Seconds,
)
from gateway.context import GatewayContext
from gateway.errors import (
    BadGateway,
    BadRequest,
    ExpectationFailed,
    Forbidden,
    GatewayError,
    GatewayTimeout,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamTimeout,
    error_body,
    error_response,
)
from gateway.headers import HEADER_TOKEN
from gateway.http_client import HttpClient, HttpResponse, HttpStream
from gateway.ids import new_id
from gateway.jsonbody import loads as json_loads
from gateway.jsonbody import loads_upstream as json_loads_upstream
from gateway.keys import digests_match, key_digest
from gateway.logs import json_line_format, write_json_line
from gateway.plugin import HOOKS, Exchange, Identity, NoConfig, Plugin
from gateway.proxy_rotation import ProxyRotation
from gateway.redaction import redact_url
from gateway.runtime import merge_tables, route_plugin_names
from gateway.sse import SSEEvent, SSEParser
from gateway.transport import ProxyConnectError, UpstreamBusy, UpstreamTlsFailed
from gateway.units import format_duration, format_size, parse_duration, parse_size
from gateway.usage import TokenMeter, Usage, estimate_tokens, prompt_tokens

#: The version of this surface (semantic versioning; see the module's docstring).
API_VERSION = "1.0"

__all__ = [
    "API_VERSION",
    "HEADER_TOKEN",
    "HOOKS",
    "HTTP_METHODS",
    "BadGateway",
    "BadRequest",
    "Bytes",
    "Exchange",
    "ExpectationFailed",
    "Forbidden",
    "GatewayConfig",
    "GatewayContext",
    "GatewayError",
    "GatewayTimeout",
    "HttpClient",
    "HttpResponse",
    "HttpStream",
    "HttpUrl",
    "Identity",
    "MethodNotAllowed",
    "NoConfig",
    "NonNegativeInt",
    "NotFound",
    "PayloadTooLarge",
    "Plugin",
    "PositiveInt",
    "PositiveSeconds",
    "ProxyConnectError",
    "ProxyRotation",
    "ProxyUrl",
    "Range",
    "RequestTimeout",
    "RouteConfig",
    "SSEEvent",
    "SSEParser",
    "Seconds",
    "ServiceUnavailable",
    "TokenMeter",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamBusy",
    "UpstreamConfig",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamTlsFailed",
    "Usage",
    "digests_match",
    "error_body",
    "error_response",
    "estimate_tokens",
    "format_duration",
    "format_size",
    "get_logger",
    "json_line_format",
    "json_loads",
    "json_loads_upstream",
    "key_digest",
    "merge_tables",
    "new_id",
    "parse_duration",
    "parse_size",
    "prompt_tokens",
    "redact_url",
    "route_plugin_names",
    "structure",
    "write_json_line",
]


def get_logger(name: str = "gateway") -> Any:
    """The structlog logger a plugin logs through: its lines join the gateway's own.

    Log names, counts and reasons, never secrets: ``redact_url`` strips the
    credentials of a URL before it is logged.
    """
    return structlog.get_logger(name)
