"""Reading an upstream's answer off the wire: the parser's side of a connection.

`AnswerReader` is the part of `gateway.transport.connection.Connection` that
llhttp (through httptools) calls back as bytes arrive: it builds the answer's
head into an `UpstreamResponse`, queues body bytes for the reader (pausing the
upstream when the reader falls behind), and fails the exchange on broken HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httptools

from gateway.transport.failures import UpstreamClosed, UpstreamProtocolError
from gateway.transport.response import UpstreamResponse, header_name, header_text

_FRAMING = {b"content-length": "length", b"transfer-encoding": "coding"}
# The largest answer head accepted (nginx: 4-8 KiB, aiohttp: 8 KiB per line).
MAX_HEAD_SIZE = 64 * 1024
# The reader's backlog at which the upstream is paused (it resumes when the reader takes it).
_HIGH_WATER = 256 * 1024
# Interim answers (100 Continue, 103 Early Hints) accepted before the real one: an
# upstream that drips them must not keep a request waiting forever.
_MAX_INTERIM = 16


class AnswerReader(asyncio.Protocol):
    """The answer to the exchange in progress, as the parser finds it."""

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
        "_interim",
        "_keep_alive",
        "_last_byte",
        "_loop",
        "_method",
        "_parser",
        "_paused",
        "_reason",
        "_unparsed",
        "_waiter",
        "complete",
        "received",
        "response",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
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
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last_byte = 0.0
        self._drain: asyncio.Future[None] | None = None

    # -- what the answer's reader calls (`Connection` does the work) ---------

    def take(self) -> Awaitable[bytes]:
        """Body bytes that arrived, waiting for some; b"" at the end of the body."""
        raise NotImplementedError

    def release(self) -> None:
        """Done with the answer: keep the connection for the next request if it can be."""
        raise NotImplementedError

    def abandon(self) -> None:
        """Done with the answer, read or not: close, and free its request's slot."""
        raise NotImplementedError

    # -- the transport's side -------------------------------------------------

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

    # -- waking the exchange --------------------------------------------------

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

    def _end_drain(self) -> None:
        """Writing may go on: the upstream took the data, answered, or failed."""
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _new_head(self) -> None:
        """Forget a head: the next one is the answer (after an interim one, whose bytes
        still count towards `MAX_HEAD_SIZE`)."""
        self._reason, self._headers, self._framing = b"", [], {}
        self._head_size = 0
