"""One kept-alive HTTP/1.1 connection to an upstream, carrying one exchange at a time.

A reverse proxy needs little of a general HTTP client: no cookies, redirects,
decompression or header defaults, just a request written as given and an
answer streamed back as it arrives.  aiohttp's client builds a request object,
a response object, a stream reader, timers and a task for every request, which
measured about a quarter of the gateway's CPU time per small request.  This
client writes the request head (and a small body) in one write, parses the
answer with httptools (llhttp, the parser of Node.js) and hands body bytes to
the reader (`UpstreamResponse`) as they come, pausing the upstream when the
reader falls behind.  The pools (`gateway.transport.pool`) keep connections
alive between requests.

Time-outs: ``connect_timeout`` bounds making a connection (through the proxy,
TLS included); ``idle_timeout`` bounds every wait for the upstream's next byte,
for the head and in the body.  The last time a byte arrived is checked at the
deadline by the pool's `IdleWatch` (one timer for many connections), rather
than by a timer per read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Any, Protocol, cast

from gateway.transport.answer_reader import AnswerReader
from gateway.transport.failures import UpstreamClosed
from gateway.transport.idle_watch import IdleWatch
from gateway.transport.response import UpstreamResponse


class Owner(Protocol):
    """The pool a connection belongs to (`gateway.transport.pool.Pool`)."""

    loop: asyncio.AbstractEventLoop
    idle_watch: IdleWatch

    def put_back(self, connection: Connection) -> None:
        """A connection done with its exchange, kept for the next."""

    def done(self) -> None:
        """An answer was released or closed: its request's slot is free."""

    def forget(self, connection: Connection) -> None:
        """A connection that closed."""


class Connection(AnswerReader):
    """One connection to an upstream, carrying one exchange at a time."""

    __slots__ = (
        "_idle_timeout",
        "_keep",
        "_sender",
        "_sent",
        "_wait_since",
        "_watch_tick",
        "idle_since",
        "pool",
        "pooled",
    )

    def __init__(self, pool: Owner) -> None:
        super().__init__(pool.loop)
        self.pool = pool
        self._keep: Any = None  # a proxy's stream writer: its collection would close the socket
        self._idle_timeout = 0.0
        self.idle_since = 0.0
        self.pooled = False  # idle in its pool's list
        self._sent = False  # the whole request went out
        self._sender: asyncio.Task[None] | None = None  # sending a streamed body
        self._wait_since = 0.0
        #: The tick of the pool's idle watch this connection is due at, while watched.
        self._watch_tick: int | None = None

    # -- the transport's side -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not derive from asyncio.Transport, but behave as one.)
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()
        self._unwatch()
        self.transport = None
        self._end_drain()  # (the next write finds no transport)
        self.pool.forget(self)

    def pause_writing(self) -> None:
        self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        self._end_drain()

    # -- the pool's side ------------------------------------------------------

    async def exchange(
        self,
        method: str,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        chunked: bool,
        idle_timeout: float,
    ) -> UpstreamResponse:
        """Send a request and return the answer once its head has arrived."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise UpstreamClosed("the connection to the upstream is closed")
        self._method = method
        if idle_timeout != self._idle_timeout:  # the idle watch may keep the old deadline
            self._idle_timeout = idle_timeout
            self._unwatch()
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
            self._sent = True
        else:
            transport.write(head)
            # The body goes out beside the wait for the answer: an upstream may
            # answer (a 401, a 413) before it has taken all of it.
            self._sender = self._loop.create_task(self._send_stream(body, chunked))
            self._sender.add_done_callback(self._sender_done)
        if self.response is None:
            self._last_byte = self._loop.time()
            await self._progress()
        if self._sender is not None:  # answered before the whole body went out: stop it
            self._sender.cancel()
            self._sender = None
        if self._error is not None:  # it broke in the same breath as its head
            raise self._error
        assert self.response is not None
        return self.response

    def _sender_done(self, sender: asyncio.Task[None]) -> None:
        """A streamed body that failed (the client's, or the upstream stopped taking it)."""
        if self._sender is sender:
            self._sender = None
        if not sender.cancelled() and sender.exception() is not None:
            self._fail(sender.exception() or UpstreamClosed("the body could not be sent"))

    async def _send_stream(self, body: AsyncIterable[bytes], chunked: bool) -> None:
        """Send a streamed body, until its end or until the upstream answers or fails.

        An upstream may answer before taking the whole body (a 401, a 413): the
        connection is then closed after the answer (``_sent`` stays false), since
        the rest of the body would otherwise be read as the next request.
        """
        async for part in body:
            if self.response is not None or self._error is not None:
                return
            if not part:
                continue
            transport = self.transport
            if transport is None:
                raise UpstreamClosed("the upstream closed the connection")
            transport.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
            if self._drain is not None:
                # The upstream takes no more for now: wait, but not past the idle
                # timeout, and not past its answer (which ends the upload).
                async with asyncio.timeout(self._idle_timeout):
                    await self._drain
        if chunked and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        self._sent = True

    async def take(self) -> bytes:
        """Body bytes that arrived, waiting for some; b"" at the end of the body."""
        while True:
            if self._body:
                data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._backlog = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            await self._progress()

    def _progress(self) -> asyncio.Future[None]:
        """A future the parser resolves when it makes progress, or fails with the exchange."""
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self._loop.create_future()
        self._wait_since = self._loop.time()
        if self._watch_tick is None:
            self._watch_tick = self.pool.idle_watch.watch(self, self._deadline())
        return waiter

    def _deadline(self) -> float:
        return max(self._last_byte, self._wait_since) + self._idle_timeout

    def check_idle(self) -> None:
        """Fail a wait that has seen no upstream byte for the idle timeout (the pool's
        idle watch calls this at the deadline it was given)."""
        self._watch_tick = None
        if self._waiter is None or self._waiter.done():  # nobody waits (or gave up)
            return
        deadline = self._deadline()
        if self._loop.time() >= deadline:
            self._fail(TimeoutError("the upstream went idle"))
        else:
            self._watch_tick = self.pool.idle_watch.watch(self, deadline)

    def reusable(self) -> bool:
        """Whether the exchange ended cleanly and the upstream keeps the connection open."""
        return (
            self.complete
            and self._sent
            and self._error is None
            and self._method != "HEAD"
            and self.transport is not None
            and not self.transport.is_closing()
            and self._keep_alive
        )

    def release(self) -> None:
        """Back to the pool if it can carry another exchange, else closed."""
        if self.reusable():
            if self._paused and self.transport is not None:
                self.transport.resume_reading()
            self._new_exchange()
            self.pool.put_back(self)
        else:
            self.close()
        self.pool.done()

    def _new_exchange(self) -> None:
        """Forget the exchange that ended, for the next one on this connection."""
        self._new_head()
        self._unparsed = self._interim = 0
        self._method = ""
        self.response = None
        self.received = self.complete = self._sent = self._paused = False
        self._body = []
        self._backlog = 0

    def _unwatch(self) -> None:
        if self._watch_tick is not None:
            self.pool.idle_watch.unwatch(self, self._watch_tick)
            self._watch_tick = None

    def abandon(self) -> None:
        """Done with the answer, read or not: close, and free its request's slot."""
        self.close()
        self.pool.done()

    def close(self) -> None:
        """Close the connection (its exchange, if any, fails)."""
        self._method = ""
        self._unwatch()
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self.pool.forget(self)
