"""A small HTTP/1.1 client for the forwarder: kept-alive connections, streamed bodies.

`Connection` carries one exchange at a time over one connection (the pools in
`gateway.upstream_pool` keep them alive between requests); `UpstreamResponse`
is an answer whose body is read as it arrives; `request_head` writes a request.

A reverse proxy needs little of a general HTTP client: no cookies, redirects,
decompression or header defaults, just a request written as given and an
answer streamed back as it arrives.  aiohttp's client builds a request object,
a response object, a stream reader, timers and a task for every request, which
measured about a quarter of the gateway's CPU time per small request.  This
client writes the request head (and a small body) in one write, parses the
answer with httptools (llhttp, the parser of Node.js) and hands body bytes to
the reader as they come, pausing the upstream when the reader falls behind.

Time-outs: ``connect_timeout`` bounds making a connection (through the proxy,
TLS included); ``idle_timeout`` bounds every wait for the upstream's next byte,
for the head and in the body.  The last time a byte arrived is checked at the
deadline by the pool's `gateway.idle_watch.IdleWatch` (one timer for many
connections), rather than by a timer per read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable
from typing import TYPE_CHECKING, Any, cast

import httptools
from multidict import CIMultiDict, istr

if TYPE_CHECKING:
    from gateway.upstream_pool import Pool  # (which makes the connections)

_NO_BODY_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE"))
_FRAMING = {b"content-length": "length", b"transfer-encoding": "coding"}
# The largest answer head accepted (nginx: 4-8 KiB, aiohttp: 8 KiB per line).
MAX_HEAD_SIZE = 64 * 1024
# The reader's backlog at which the upstream is paused (it resumes when the reader takes it).
_HIGH_WATER = 256 * 1024
# Interim answers (100 Continue, 103 Early Hints) accepted before the real one: an
# upstream that drips them must not keep a request waiting forever.
_MAX_INTERIM = 16


#: Header names seen, decoded once: the same few names come in every answer, and an
#: open stream then shares them rather than holding its own copies.  They are
#: ``istr``: a CIMultiDict keeps a case-insensitive copy of every plain ``str`` key
#: the first time it is iterated (~50 bytes per header, for as long as a stream is open).
_NAMES: dict[bytes, istr] = {}
_MAX_NAMES = 1024


def header_name(raw: bytes) -> istr:
    """A header name as text, the same string object each time it is seen."""
    name = _NAMES.get(raw)
    if name is None:
        name = istr(raw.decode("utf-8", "surrogateescape"))
        if len(_NAMES) < _MAX_NAMES:  # (bounded: an upstream may invent names)
            _NAMES[raw] = name
    return name


def header_text(raw: bytes) -> str:
    """A header value (or reason phrase) as text, every byte kept.

    UTF-8 when it is (aiohttp writes text out as UTF-8: the same bytes go on),
    else latin-1, one character per byte, as h11 and httpx read headers: never a
    surrogate, which aiohttp's writer would cut the value at.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class UpstreamConnectError(Exception):
    """No connection could be made to the upstream (refused, unreachable, unknown name)."""


class UpstreamProtocolError(Exception):
    """The upstream's answer broke HTTP/1.1 (framing, status line, an upgrade)."""


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before the answer was complete."""


class BadRequestHead(ValueError):
    """A header name or value that would break the request head (CR, LF)."""


class UpstreamResponse:
    """The answer's head, and its body read chunk by chunk as it arrives."""

    __slots__ = (
        "_ahead",
        "_connection",
        "_headers",
        "content_length",
        "header_list",
        "reason",
        "status",
    )

    def __init__(
        self,
        connection: Connection,
        status: int,
        reason: str,
        header_list: list[tuple[str, str]],
        content_length: int | None,
    ) -> None:
        self._connection: Connection | None = connection
        self.status = status
        self.reason = reason
        #: The headers as received, in order (cheaper to filter than `headers`).
        self.header_list = header_list
        #: The body's length when the answer says it (not chunked), else None.
        self.content_length = content_length
        self._headers: CIMultiDict[str] | None = None
        self._ahead = b""  # body bytes read ahead (`read_ahead`), served first by `chunk`

    @property
    def headers(self) -> CIMultiDict[str]:
        """The headers as received."""
        if self._headers is None:
            self._headers = CIMultiDict(self.header_list)
        return self._headers

    def forget_headers(self) -> None:
        """Let the headers go (once copied: an open stream need not hold them)."""
        self.header_list = []
        self._headers = None

    def chunk(self) -> Awaitable[bytes]:
        """The body bytes that arrived since the last call (waiting for some); b"" at the end.

        Raises `TimeoutError` when the upstream stays silent for the idle
        timeout, `UpstreamClosed` or `UpstreamProtocolError` when the body breaks off.
        (Not a coroutine itself: one frame less held per open stream.)
        """
        if self._ahead:
            ahead, self._ahead = self._ahead, b""
            return _given(ahead)
        connection = self._connection
        return connection.take() if connection is not None else _nothing()

    async def read_ahead(self, limit: int) -> bytes | None:
        """The whole body if it ends within ``limit`` bytes, else ``None``.

        What was read is kept and served again by `chunk`, so that a response hook
        may look at a small answer (an error's reason) and still pass it on.  A read
        that fails gives ``None`` here; `chunk` then raises the failure in its turn.
        """
        parts = [self._ahead]
        size = len(self._ahead)
        self._ahead = b""
        ended = False
        while size <= limit:
            try:
                chunk = await self.chunk()
            except (OSError, UpstreamProtocolError):
                break
            if not chunk:
                ended = True
                break
            parts.append(chunk)
            size += len(chunk)
        self._ahead = b"".join(parts)
        return self._ahead if ended and size <= limit else None

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        parts = []
        while chunk := await self.chunk():
            parts.append(chunk)
        return b"".join(parts)

    @property
    def closed(self) -> bool:
        """Whether the connection was released or closed (nothing more can be read)."""
        return self._connection is None

    def release(self) -> None:
        """Done with the answer: keep the connection for the next request if it can be."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()

    def close(self) -> None:
        """Done with the answer, read or not: close its connection."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            connection.pool.done()


class Connection(asyncio.Protocol):
    """One connection to an upstream, carrying one exchange at a time."""

    # (Slots: thousands of these live at once, one per open stream.)
    __slots__ = (
        "_backlog",
        "_body",
        "_close_delimited",
        "_drain",
        "_error",
        "_framing",
        "_head_size",
        "_headers",
        "_idle_timeout",
        "_interim",
        "_keep",
        "_keep_alive",
        "_last_byte",
        "_loop",
        "_method",
        "_parser",
        "_paused",
        "_reason",
        "_sender",
        "_sent",
        "_unparsed",
        "_wait_since",
        "_waiter",
        "_watch_tick",
        "complete",
        "idle_since",
        "pool",
        "pooled",
        "received",
        "response",
        "transport",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._keep: Any = None  # a proxy's stream writer: its collection would close the socket
        self._parser = httptools.HttpResponseParser(self)
        self._idle_timeout = 0.0
        self.idle_since = 0.0
        self.pooled = False  # idle in its pool's list
        # The exchange in progress (reset by `_new_exchange` for the next one).
        self._method = ""
        self._reason = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0  # the head's headers, as parsed
        self._unparsed = 0  # bytes read while no head was complete: bounds what llhttp holds
        self._interim = 0  # interim answers so far
        self._framing: dict[str, bytes] = {}  # "length", "coding": what frames the body
        self._close_delimited = False
        self._keep_alive = False
        self.response: UpstreamResponse | None = None
        self.received = False  # any byte of the answer
        self._body: list[bytes] = []
        self._backlog = 0
        self._paused = False
        self.complete = False
        self._sent = False  # the whole request went out
        self._sender: asyncio.Task[None] | None = None  # sending a streamed body
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wait_since = 0.0
        self._last_byte = 0.0
        #: The tick of the pool's idle watch this connection is due at, while watched.
        self._watch_tick: int | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- the transport's side -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not derive from asyncio.Transport, but behave as one.)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._last_byte = self._loop.time()
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            if self.complete:  # bytes after a whole answer: serve it, but close after
                self._keep_alive = False
            else:
                self._fail(UpstreamProtocolError(f"malformed answer: {exc}"))
        if self.response is None:  # all of it was (interim) head: bound it
            self._unparsed += len(data)
            if self._unparsed > MAX_HEAD_SIZE:
                self._fail(UpstreamProtocolError("the answer's head is too large"))

    def eof_received(self) -> bool:
        self._ended()
        return False

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

    def _end_drain(self) -> None:
        """Writing may go on: the upstream took the data, answered, or failed."""
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _ended(self) -> None:
        """The upstream closed its side: the end of a close-delimited body, or a failure."""
        if self.complete or self._error is not None:
            return
        if self.response is not None and self._close_delimited:
            self.complete = True
            self._wake()
        elif self._method:
            self._fail(UpstreamClosed("the upstream closed the connection mid-answer"))

    # -- httptools' callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        # SECURITY: an answer while no request waits (idle in the pool, or after the
        # answer to this one) must never be taken for the answer to the next request.
        if not self._method or self.response is not None:
            raise UpstreamProtocolError("an answer nobody asked for")

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD_SIZE:
            raise UpstreamProtocolError("the answer's head is too large")
        framing = _FRAMING.get(name.lower())
        if framing is not None:  # (llhttp has checked them: one length, digits, not both)
            self._framing[framing] = value if framing not in self._framing else b"<repeated>"
        self._headers.append((header_name(name), header_text(value)))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): wait for the real one
            self._interim += 1
            if self._interim > _MAX_INTERIM:
                raise UpstreamProtocolError("too many interim answers")
            self._new_head()
            return
        coding = self._framing.get("coding")
        # SECURITY: the body is chunked exactly when llhttp reads it so (it strips spaces,
        # not tabs); any other transfer coding ("xchunked", "gzip, chunked", two headers)
        # could not be passed on, and the two parsers might not agree where it ends.
        if coding is not None and coding.rstrip(b" ").lower() != b"chunked":
            raise UpstreamProtocolError("an unsupported Transfer-Encoding")
        length = self._framing.get("length") if coding is None else None
        self._close_delimited = length is None and coding is None
        self.response = UpstreamResponse(
            self,
            status,
            header_text(self._reason),
            self._headers,
            int(length) if length is not None else None,
        )
        self._headers = []  # the answer's now: it may let them go before the stream ends
        # (Asked here: once the message is complete the parser has forgotten.)
        self._keep_alive = self._parser.should_keep_alive()
        if self._method == "HEAD":  # no body follows, whatever the head says
            self.complete = True
        self._end_drain()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._body.append(body)
        self._backlog += len(body)
        if self._backlog > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.complete = True
            self._wake()

    # -- the forwarder's side -------------------------------------------------

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

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self._end_drain()
        if self.transport is not None:
            self.transport.abort()

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

    def _new_head(self) -> None:
        """Forget a head: the next one is the answer (after an interim one, whose bytes
        still count towards `MAX_HEAD_SIZE`)."""
        self._reason, self._headers, self._framing = b"", [], {}
        self._head_size = 0

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


async def _nothing() -> bytes:
    return b""


async def _given(data: bytes) -> bytes:
    return data


def request_head(
    method: str,
    target: str,
    host: str,
    headers: CIMultiDict[str],
    body: bytes | AsyncIterable[bytes] | None,
) -> tuple[bytes, bool]:
    """The request line and headers, and whether the body goes chunked.

    A body given whole is sent with its own ``Content-Length``; a streamed one
    keeps the client's, or goes chunked without one.
    """
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    if "Host" not in headers:
        lines.append(f"Host: {host}\r\n")
    chunked = False
    if isinstance(body, bytes) or (body is None and method not in _NO_BODY_METHODS):
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "content-length")
        lines.append(f"Content-Length: {len(body or b'')}\r\n")
    else:
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if body is not None and "Content-Length" not in headers:
            chunked = True
            lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # SECURITY: a CR or LF inside a name or value would let it inject headers.
    if head.count("\n") != len(lines) or head.count("\r") != len(lines):
        raise BadRequestHead("a request header contains a line break")
    return head.encode("utf-8", "surrogateescape"), chunked
