"""The cap on client connections: what a connection over it gets.

Each proxied request holds two descriptors (the client's and the upstream's);
at the process's open-file limit ``accept`` fails and new clients see their
connection reset, with nothing logged.  A cap below that limit answers them
instead, as nginx's ``limit_conn`` or Envoy's overload manager do: a 503 in the
envelope with ``Connection: close``, once the request has arrived (an answer
sent before it, then a close, could reach the client as a reset).
"""

from __future__ import annotations

import asyncio
import resource

from gateway.errors import error_body

# Descriptors kept for everything but client connections: the listening sockets,
# logs, Redis, idle upstream connections.
_RESERVED = 64
# How long a refused connection is read (and discarded) before it is closed.
_LINGER = 2.0

_BODY = error_body(
    "the gateway is at its limit of client connections: try again shortly",
    "gateway_error",
    "service_unavailable",
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" % len(_BODY)
) + _BODY


def default_cap() -> int:
    """The cap when the config sets none: half the open-file limit, less a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(16, (soft - _RESERVED) // 2)


class Refusal(asyncio.Protocol):
    """A connection over the cap: answered 503 when its request arrives, then closed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answered = False
        self._closer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._closer = asyncio.get_running_loop().call_later(_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        # (What the client sends is never parsed: the answer is the same for all.)
        if not self.answered and self.transport is not None:
            self.answered = True
            self.transport.write(REFUSAL)
            if self.transport.can_write_eof():
                self.transport.write_eof()  # then read the rest until the client closes

    def eof_received(self) -> bool:
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closer is not None:
            self._closer.cancel()
        self.transport = None
