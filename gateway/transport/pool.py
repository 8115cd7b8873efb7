"""Kept-alive connections to one upstream origin, directly or through a proxy.

The transport keeps one `Pool` per upstream origin and outbound proxy; each
request takes a connection (the newest idle one, else a new one), and gives it
back when its answer was read to the end and the upstream keeps it open.

``connect_timeout`` bounds each step before a request can go out: the wait for
a free slot (as redis-py's ``BlockingConnectionPool``), the tunnel through the
proxy, and the connection with its TLS handshake.  Each step fails in its own
way, so that `gateway.transport.errors` can say which one did.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from yarl import URL

from gateway.transport.connection import Connection
from gateway.transport.failures import (
    SlotTimeout,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamTlsError,
)
from gateway.transport.idle_watch import IdleWatch
from gateway.transport.proxy import DEFAULT_PORTS, connect_through_proxy, make_proxy
from gateway.transport.response import UpstreamResponse
from gateway.transport.tls import describe_tls_error

# Bodies of requests that may be sent again on a fresh connection if a kept-alive
# one turns out to have been closed by the upstream (RFC 9110 section 9.2.2).
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))


class Pool:
    """Kept-alive connections to one origin, directly or through one proxy.

    At most ``limit`` connections are in use at once; a request beyond waits
    for one, for ``connect_timeout`` at most (then `SlotTimeout`).  Idle
    connections are reused newest first and closed after ``keepalive_timeout``
    seconds unused.
    """

    def __init__(
        self,
        origin: URL,
        proxy: str | None,
        limit: int,
        keepalive_timeout: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.scheme = origin.scheme
        self.host = origin.raw_host or ""
        self.port = origin.port or DEFAULT_PORTS.get(self.scheme, 80)
        self._proxy = make_proxy(proxy) if proxy is not None else None
        # (Never plain text to an https origin, whatever the caller passed.)
        self._tls = (tls or ssl.create_default_context()) if self.scheme == "https" else None
        self._keepalive_timeout = keepalive_timeout
        self._limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.idle_watch = IdleWatch(self.loop)
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == DEFAULT_PORTS.get(self.scheme)
        self.host_header = host if default else f"{host}:{self.port}"

    async def request(
        self,
        method: str,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        chunked: bool,
        connect_timeout: float,
        idle_timeout: float,
    ) -> UpstreamResponse:
        """Send one request; the answer holds its connection until released or closed."""
        if self._slots.locked():  # (only then a wait, and a timer to bound it)
            try:
                async with asyncio.timeout(connect_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise SlotTimeout(self._limit) from None
        else:
            await self._slots.acquire()
        connection = self._take_idle()
        try:
            if connection is not None:
                try:
                    return await connection.exchange(method, head, body, chunked, idle_timeout)
                except UpstreamClosed:
                    connection.close()
                    # A kept-alive connection the upstream had just closed: the request
                    # never reached it, or was idempotent.  Send it once more on a new one.
                    if connection.received or not _replayable(method, body):
                        raise
            connection = await self._connect(connect_timeout)
            return await connection.exchange(method, head, body, chunked, idle_timeout)
        except BaseException:
            if connection is not None:
                connection.close()
            self._slots.release()
            raise

    def _take_idle(self) -> Connection | None:
        """The newest idle connection still open and within the keep-alive timeout."""
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()
            connection.pooled = False
            fresh = now - connection.idle_since < self._keepalive_timeout
            if fresh and connection.transport is not None and not connection.transport.is_closing():
                return connection
            connection.close()
        return None

    async def _connect(self, timeout: float) -> Connection:
        connection = Connection(self)
        deadline = self.loop.time() + timeout
        try:
            if self._proxy is None:
                async with asyncio.timeout_at(deadline):
                    await self.loop.create_connection(
                        lambda: connection,
                        self.host,
                        self.port,
                        ssl=self._tls,
                        server_hostname=self.host if self._tls else None,
                    )
            else:
                await connect_through_proxy(
                    self._proxy, connection, self.host, self.port, self._tls, deadline
                )
        except (ProxyConnectionError, ProxyTimeoutError, ProxyError):
            raise  # the proxy's own failure, told apart by the forwarder
        except ssl.SSLError as exc:
            raise UpstreamTlsError(describe_tls_error(exc, self.host)) from exc
        except TimeoutError:
            raise  # (an OSError too) the forwarder answers it 504, not 502
        except OSError as exc:
            raise UpstreamConnectError(str(exc) or type(exc).__name__) from exc
        self._open.add(connection)
        return connection

    def put_back(self, connection: Connection) -> None:
        """A connection done with its exchange, kept for the next."""
        connection.idle_since = self.loop.time()
        connection.pooled = True
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._keepalive_timeout, self._sweep)

    def done(self) -> None:
        """An answer was released or closed: its request's slot is free."""
        self._slots.release()

    def forget(self, connection: Connection) -> None:
        """A connection that closed."""
        self._open.discard(connection)
        if connection.pooled:  # (rare: an idle connection the upstream closed)
            connection.pooled = False
            self._idle.remove(connection)

    def _sweep(self) -> None:
        """Close the connections idle for longer than the keep-alive timeout."""
        self._sweeper = None
        cutoff = self.loop.time() - self._keepalive_timeout
        expired = [c for c in self._idle if c.idle_since <= cutoff]
        self._idle = [c for c in self._idle if c.idle_since > cutoff]
        for connection in expired:
            connection.pooled = False
            connection.close()
        if self._idle:
            self._sweeper = self.loop.call_later(self._keepalive_timeout, self._sweep)

    def close(self) -> None:
        """Close every connection, idle or in use."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._open):
            connection.close()


def _replayable(method: str, body: bytes | AsyncIterable[bytes] | None) -> bool:
    return method in _IDEMPOTENT and (body is None or isinstance(body, bytes))
