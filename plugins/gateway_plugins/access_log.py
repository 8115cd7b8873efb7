"""``access_log``: one structured log line per request, and the request id.

The request id is the client's ``X-Request-ID`` when it sent a sane one, else a
new random id; it is sent upstream and returned to the client, so one id
follows a request through every log.
"""

from __future__ import annotations

import functools
import json
import time
from json.encoder import encode_basestring_ascii as quote
from typing import Literal

import attrs
from multidict import istr

from gateway.api import Exchange, Plugin, get_logger, json_line_format, redact_url, write_json_line

logger = get_logger("gateway.access")

#: ``redact_url`` remembered: the proxies are few (they come from the config) and parsing is dear.
_redact_proxy = functools.lru_cache(maxsize=256)(redact_url)

#: An access line's fields, in order; ``error`` follows when there was one.
FIELDS = (
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "upstream_status",
    "duration_ms",
    "ttfb_ms",
    "bytes_in",
    "bytes_out",
    "client_ip",
    "identity",
    "upstream",
    "proxy",
    "model",
    "credential",
    "deployment",
    "limited_by",
)
#: The longest ``model`` logged: it is the client's word, not the config's.
MAX_MODEL_LOGGED = 100


class AccessLog(Plugin):
    """One JSON line per request (id, route, status, timings, bytes, identity, model,
    credential, deployment, the limit that refused it, error)."""

    @attrs.frozen
    class Config:
        #: The header that carries the request id, both ways.
        request_id_header: str = "X-Request-ID"
        level: Literal["debug", "info", "warning"] = "info"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        # istr: a CIMultiDict keeps an istr copy of a plain str key once iterated.
        self.header = istr(config.request_id_header)
        self.level = config.level
        self.line = json_line_format(FIELDS, "request", self.level)
        self.line_with_error = json_line_format((*FIELDS, "error"), "request", self.level)

    async def on_request(self, ex: Exchange) -> None:
        ex.upstream_headers[self.header] = ex.request_id

    async def on_response(self, ex: Exchange) -> None:
        if ex.response_headers is not None:
            ex.response_headers[self.header] = ex.request_id

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        values = json_values(ex, time.perf_counter())
        if error is None:
            line = self.line
        else:
            line = self.line_with_error
            values += (quote(describe_error(error)),)
        # Straight to the JSON output when it is in force (one %-format instead of
        # structlog's processor chain); the same fields through structlog otherwise.
        if not write_json_line(self.level, line, values):
            fields = dict(zip((*FIELDS, "error"), map(json.loads, values), strict=False))
            getattr(logger, self.level)("request", **fields)


def json_values(ex: Exchange, now: float) -> tuple[str, ...]:
    """The values of an access line's `FIELDS`, each as ``json.dumps`` writes it.

    (Each ``None`` test is written out: a helper call per field was 5k of the
    plugin's 58k instructions a request, callgrind.)
    """
    first_byte_at = ex.first_byte_at
    identity = ex.identity
    upstream = ex.upstream
    status = ex.status
    upstream_status = ex.upstream_status
    credential = ex.credential
    deployment = ex.deployment
    limited_by = ex.limited_by
    return (
        quote(ex.request_id),
        quote(ex.method),
        quote(ex.path),
        quote(ex.route_name),
        f"{status:d}" if status is not None else "null",
        f"{upstream_status:d}" if upstream_status is not None else "null",
        f"{(now - ex.started) * 1000:.2f}",  # milliseconds
        f"{(first_byte_at - ex.started) * 1000:.2f}" if first_byte_at else "null",
        f"{ex.bytes_in:d}",
        f"{ex.bytes_out:d}",
        quote(ex.client_ip),
        quote(identity.name) if identity is not None else "null",
        quote(upstream.name) if upstream is not None else "null",
        # SECURITY: proxy URLs may carry credentials.
        quote(_redact_proxy(ex.proxy)) if ex.proxy else "null",
        quote(ex.model[:MAX_MODEL_LOGGED]) if ex.model is not None else "null",
        # (Names from the config: the credential's name, never its secret.)
        quote(credential) if credential is not None else "null",
        quote(deployment) if deployment is not None else "null",
        quote(limited_by) if limited_by is not None else "null",
    )


def describe_error(error: BaseException) -> str:
    """A short, secret-free description of what went wrong."""
    message = getattr(error, "message", None)
    if isinstance(message, str):
        return message
    return type(error).__name__
