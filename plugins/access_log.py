"""``access_log``: one structured log line per request, and the request id.

The request id is the client's ``X-Request-ID`` when it sent a sane one, else a
new random id; it is sent upstream and returned to the client, so one id
follows a request through every log.
"""

from __future__ import annotations

import functools
import time
from typing import Literal

import attrs
import structlog

from gateway.config import redact_url
from gateway.logs import write_json_line
from gateway.plugin import Exchange, Plugin

logger = structlog.get_logger("gateway.access")

#: ``redact_url`` remembered: the proxies are few (they come from the config) and parsing is dear.
_redact_proxy = functools.lru_cache(maxsize=256)(redact_url)


class AccessLog(Plugin):
    """One JSON line per request (id, route, status, timings, bytes, identity, error)."""

    @attrs.frozen
    class Config:
        #: The header that carries the request id, both ways.
        request_id_header: str = "X-Request-ID"
        level: Literal["debug", "info", "warning"] = "info"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.header = config.request_id_header
        self.level = config.level

    async def on_request(self, ex: Exchange) -> None:
        ex.upstream_headers[self.header] = ex.request_id

    async def on_response(self, ex: Exchange) -> None:
        if ex.response_headers is not None:
            ex.response_headers[self.header] = ex.request_id

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        now = time.perf_counter()
        fields: dict[str, str | int | float | None] = {
            "request_id": ex.request_id,
            "method": ex.method,
            "path": ex.path,
            "route": ex.route_name,
            "status": ex.status,
            "upstream_status": ex.upstream_status,
            "duration_ms": round((now - ex.started) * 1000, 2),
            "ttfb_ms": round((ex.first_byte_at - ex.started) * 1000, 2)
            if ex.first_byte_at
            else None,
            "bytes_in": ex.bytes_in,
            "bytes_out": ex.bytes_out,
            "client_ip": ex.client_ip,
            "identity": ex.identity.name if ex.identity is not None else None,
            "upstream": ex.upstream.name if ex.upstream is not None else None,
            # SECURITY: proxy URLs may carry credentials.
            "proxy": _redact_proxy(ex.proxy) if ex.proxy else None,
        }
        if error is not None:
            fields["error"] = describe_error(error)
        # Straight to the JSON output when it is in force (a few µs instead of
        # structlog's processor chain); the same line through structlog otherwise.
        if not write_json_line(self.level, "request", fields):
            getattr(logger, self.level)("request", **fields)


def describe_error(error: BaseException) -> str:
    """A short, secret-free description of what went wrong."""
    message = getattr(error, "message", None)
    if isinstance(message, str):
        return message
    return type(error).__name__
