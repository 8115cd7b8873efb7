"""Ending what is still open when a graceful stop runs out of time.

On ``SIGTERM`` the gateway stops accepting connections and lets open requests
finish for up to ``server.drain_timeout``.  Then `gateway.server.Service` cancels
every request still in progress with `DRAIN_DEADLINE` as the reason, and the
request's handler ends its answer with `end_answer`, as a client of nginx or
Envoy would expect, never leaving it hanging:

- nothing sent yet: 503 ``shutting_down`` in the JSON envelope;
- an event stream under way: a last event in the envelope,
  ``data: {"error": {..., "code": "shutting_down"}}`` (the OpenAI SDK raises it
  as an ``APIError``), then a clean end;
- any other body under way: the connection is aborted, so that the client can
  tell the answer is incomplete (a clean end would pass for a whole answer).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import GatewayError, error_body
from gateway.plugin import Exchange

#: The reason `Service.stop` cancels requests with once ``drain_timeout`` has passed.
DRAIN_DEADLINE = "drain_timeout passed"


class ShuttingDown(GatewayError):
    """The gateway is stopping and could not finish this answer in time."""

    status, type, code = 503, "gateway_error", "shutting_down"
    close_connection = True


def ended_by_drain(exc: BaseException) -> bool:
    """Whether ``exc`` is the cancellation of a request at the drain deadline."""
    return isinstance(exc, asyncio.CancelledError) and DRAIN_DEADLINE in exc.args


async def end_answer(ex: Exchange, response: web.StreamResponse | None) -> web.StreamResponse:
    """End the answer to ``ex`` at the drain deadline; ``response`` is its head, once sent."""
    error = ShuttingDown("the gateway is shutting down and could not finish this answer in time")
    if response is None or not response.prepared:
        answer = error.response()
        ex.status = answer.status
        return answer
    ex.log.warning("answer ended at the drain deadline", bytes_out=ex.bytes_out)
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        # The blank lines first end any event the upstream's last chunk left half-sent.
        event = b"\n\ndata: " + error_body(error.message, error.type, error.code) + b"\n\n"
        response.force_close()
        try:
            await response.write(event)
            await response.write_eof()
        except ConnectionError:
            pass  # the client is gone: nothing to end
        return response
    transport = ex.request.transport
    if transport is not None:
        transport.abort()
    return response
