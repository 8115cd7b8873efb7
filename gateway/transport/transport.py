"""`Transport`: HTTP/1.1 requests over kept-alive pooled connections, as plain parts.

The seam between the gateway and the network, in the manner of httpx's
transports: a method, a URL, headers and a body (bytes or an async iterator)
go in, with the outbound proxy, time-outs, connection limits and TLS settings
to use; an `UpstreamResponse` comes out once its head has arrived, its body to
be read as it arrives.  Every failure comes out as one of the gateway's errors
(`gateway.transport.errors`).  It knows nothing of routes, plugins or exchanges.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable

import attrs
import structlog
from multidict import CIMultiDict
from yarl import URL

from gateway.transport.errors import UpstreamTlsFailed, upstream_errors
from gateway.transport.pool import Pool
from gateway.transport.request_head import request_head
from gateway.transport.response import UpstreamResponse
from gateway.transport.tls import TlsSettings, tls_context

logger = structlog.get_logger("gateway")

#: A request body: whole, streamed, or none.
Body = bytes | AsyncIterable[bytes] | None


@attrs.frozen
class Timeouts:
    """How long to wait: ``connect`` for a connection (a free slot, the proxy's tunnel,
    TLS), ``idle`` for each next byte of the answer, its head included."""

    connect: float = 10.0
    idle: float = 300.0


@attrs.frozen
class Limits:
    """How many connections a pool may have in use at once, and how long an idle one is kept."""

    max_connections: int = 100
    keepalive_timeout: float = 15.0


class Transport:
    """Sends requests over pooled connections: one pool per group, origin and proxy.

    A group (an upstream's name, say) has its own pools, so that its limits and
    TLS settings apply to its requests only.
    """

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str | None, str, str | None, int | None], Pool] = {}
        self._tls: dict[TlsSettings, ssl.SSLContext] = {}

    async def request(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        body: Body,
        *,
        proxy: str | None = None,
        timeouts: Timeouts = Timeouts(),
        limits: Limits = Limits(),
        tls: TlsSettings | None = None,
        group: str = "",
        target: str = "the upstream",
    ) -> UpstreamResponse:
        """Send one request; return the answer once its head has arrived.

        ``target`` names what is called in error messages.  The answer holds its
        connection until it is read to the end and released, or closed.
        """
        with upstream_errors(target, proxy):
            pool = self.pool(group, url, proxy, limits, tls, target)
            head, chunked = request_head(method, url.raw_path_qs, pool.host_header, headers, body)
            return await pool.request(
                method,
                head,
                body,
                chunked,
                connect_timeout=timeouts.connect,
                idle_timeout=timeouts.idle,
            )

    def pool(
        self,
        group: str,
        url: URL,
        proxy: str | None,
        limits: Limits,
        tls: TlsSettings | None,
        target: str,
    ) -> Pool:
        """The pool for ``url``'s origin through ``proxy`` in ``group`` (made on first use)."""
        key = (group, proxy, url.scheme, url.raw_host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            context = self.tls_context(tls, target) if url.scheme == "https" else None
            pool = self._pools[key] = Pool(
                url, proxy, limits.max_connections, limits.keepalive_timeout, context
            )
        return pool

    def tls_context(self, tls: TlsSettings | None, target: str) -> ssl.SSLContext | None:
        """The context for ``tls`` (one per distinct setting; ``None``: the system's CAs)."""
        if tls is None:
            return None
        context = self._tls.get(tls)
        if context is None:
            try:
                context = self._tls[tls] = tls_context(tls)
            except ValueError as exc:  # (checked at load; a file may have gone since)
                raise UpstreamTlsFailed(f"TLS settings of {target}: {exc}") from None
            if not tls.verify:
                logger.warning("TLS certificates of this upstream are not verified", target=target)
        return context

    async def close(self) -> None:
        """Close every pooled connection."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
