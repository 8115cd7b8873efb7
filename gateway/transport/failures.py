"""What goes wrong on the way to an upstream, as the transport's own exceptions.

`gateway.transport.errors` turns each into the gateway's error (502, 503, 504)
with a message that says which step failed.
"""

from __future__ import annotations


class UpstreamConnectError(Exception):
    """No connection could be made to the upstream (refused, unreachable, unknown name)."""


class UpstreamProtocolError(Exception):
    """The upstream's answer broke HTTP/1.1 (framing, status line, an upgrade)."""


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before the answer was complete."""


class BadRequestHead(ValueError):
    """A header name or value that would break the request head (CR, LF)."""


class SlotTimeout(Exception):
    """Every connection the pool may open stayed in use for the whole wait."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"all {limit} connections are in use")
        self.limit = limit


class UpstreamTlsError(UpstreamConnectError):
    """TLS with the upstream failed: ``reason`` says how (its certificate, its name...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
