"""The transport's HTTP/1.1 connections and pools (`gateway.transport`), against real servers.

Every upstream here is a real server on 127.0.0.1: an aiohttp app where an HTTP
server is enough, a raw `asyncio` server (`RawUpstream`) where a test needs
exact bytes, a misbehaving answer, or a count of the connections it accepted and
of the ones the client closed.  Proxies are real pproxy processes, and TLS uses a
real certificate authority (trustme).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import python_socks
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, istr
from yarl import URL

from gateway.transport.answer_reader import MAX_HEAD_SIZE
from gateway.transport.failures import UpstreamClosed, UpstreamConnectError, UpstreamProtocolError
from gateway.transport.pool import Pool
from gateway.transport.request_head import BadRequestHead, request_head
from gateway.transport.response import UpstreamResponse
from tests.proxies import ProxyServer, free_port

# An upper bound for anything that should happen "at once": generous, never a measurement.
BOUND = 5.0


# -- a raw upstream ---------------------------------------------------------------


class Peer:
    """One connection the raw upstream accepted: what it read, and whether it ended."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.index = index
        self.reader = reader
        self.writer = writer
        #: Each request read: its head and its body (de-chunked).
        self.requests: list[tuple[bytes, bytes]] = []
        #: Set when the client closed (or reset) the connection.
        self.eof = asyncio.Event()

    @property
    def bodies(self) -> list[bytes]:
        return [body for _, body in self.requests]

    async def read_request(self) -> tuple[bytes, bytes] | None:
        """The next request (head, body), or None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            fields = head.lower()
            body = b""
            if b"\r\ntransfer-encoding: chunked\r\n" in fields:
                while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                    body += (await self.reader.readexactly(size + 2))[:-2]
                await self.reader.readuntil(b"\r\n")
            elif b"\r\ncontent-length: " in fields:
                length = int(fields.split(b"\r\ncontent-length: ")[1].split(b"\r\n")[0])
                body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        self.requests.append((head, body))
        return head, body

    async def send(self, *parts: bytes, pause: float = 0.0) -> None:
        """Write ``parts`` (``pause`` seconds apart)."""
        for number, part in enumerate(parts):
            if number and pause:
                await asyncio.sleep(pause)
            self.writer.write(part)
            await self.writer.drain()

    async def until_eof(self) -> None:
        """Read (and drop) whatever comes until the client closes the connection."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.eof.set()


Handler = Callable[[Peer], Awaitable[None]]


class RawUpstream:
    """A TCP server handing each connection to ``handler``; it counts connections.

    When the handler returns, the server closes the connection (a FIN).  Leaving
    the ``async with`` block ends every handler still running.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.peers: list[Peer] = []
        self.open = 0
        self.most_open = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def requests(self) -> list[tuple[bytes, bytes]]:
        return [request for peer in self.peers for request in peer.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(len(self.peers), reader, writer)
        self.peers.append(peer)
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        # (The handler runs in a task of its own: cancelling the task asyncio gave
        # this callback would make asyncio log the cancellation as an error.)
        handler = asyncio.ensure_future(self.handler(peer))
        self._handlers.add(handler)
        try:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await handler
        finally:
            self._handlers.discard(handler)
            self.open -= 1
            writer.close()


def ok(body: bytes = b"hi", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def keep_alive(*answers: bytes) -> Handler:
    """Answer each request on the connection with the next of ``answers`` (the last repeats)."""

    async def handler(peer: Peer) -> None:
        count = 0
        while await peer.read_request() is not None:
            await peer.send(answers[min(count, len(answers) - 1)])
            count += 1

    return handler


def per_connection(*handlers: Handler) -> Handler:
    """The first connection gets the first handler, and so on (the last repeats)."""
    served = 0

    async def handler(peer: Peer) -> None:
        nonlocal served
        served += 1
        await handlers[min(served, len(handlers)) - 1](peer)

    return handler


async def hang(peer: Peer) -> None:
    await asyncio.sleep(3600)


# -- fixtures and helpers -----------------------------------------------------------


MakePool = Callable[..., Pool]
StartRaw = Callable[[Handler], Awaitable[RawUpstream]]
StartProxy = Callable[..., Awaitable[ProxyServer]]
ServeApp = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    """``make_pool(url, proxy=None, limit=10, keepalive_timeout=30, tls=None)``; closed after."""
    pools: list[Pool] = []

    def make(
        url: str,
        proxy: str | None = None,
        limit: int = 10,
        keepalive_timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> Pool:
        pool = Pool(URL(url), proxy, limit, keepalive_timeout, tls)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[StartRaw]:
    """``await raw_upstream(handler)``: a started `RawUpstream`, stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(handler: Handler) -> RawUpstream:
            return await stack.enter_async_context(RawUpstream(handler))

        yield start


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    """A certificate authority for the TLS upstreams (trusted only where a test says)."""
    return trustme.CA()


Body = bytes | AsyncIterator[bytes] | None


async def send(
    pool: Pool,
    method: str = "GET",
    target: str = "/",
    headers: dict[str, str] | None = None,
    body: Body = None,
    connect_timeout: float = BOUND,
    idle_timeout: float = BOUND,
) -> UpstreamResponse:
    head, chunked = request_head(method, target, pool.host_header, CIMultiDict(headers or {}), body)
    return await pool.request(method, head, body, chunked, connect_timeout, idle_timeout)


async def fetch(pool: Pool, method: str = "GET", **kwargs: Any) -> tuple[int, bytes]:
    """Send a request, read the whole answer and release it: (status, body)."""
    async with asyncio.timeout(BOUND):
        response = await send(pool, method, **kwargs)
        try:
            body = await response.read()
        finally:
            response.release()
    return response.status, body


async def finishes(coro: Awaitable[Any], bound: float = BOUND) -> asyncio.Future[Any]:
    """Run ``coro`` and return its finished task; the test fails if it runs past ``bound``.

    (Unlike ``asyncio.timeout`` this never turns "still running" into a `TimeoutError`,
    so a test can expect the client's own `TimeoutError`.)
    """
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=bound)
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        pytest.fail(f"still running after {bound} s")
    return task


async def stream(*parts: bytes, pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


async def eventually(event: asyncio.Event, bound: float = BOUND) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), bound)
    return event.is_set()


# -- keep-alive ---------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    upstream = await raw_upstream(keep_alive(ok(b"one"), ok(b"two"), ok(b"three")))
    pool = make_pool(upstream.url)
    answers = [await fetch(pool, target=f"/{n}") for n in range(3)]
    assert answers == [(200, b"one"), (200, b"two"), (200, b"three")]
    assert len(upstream.peers) == 1
    assert [head.split(b" ")[1] for head, _ in upstream.peers[0].requests] == [b"/0", b"/1", b"/2"]


async def test_header_names_are_shared_case_insensitive_keys(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    # One object per name across answers, and an istr: a CIMultiDict built from
    # them keeps no extra copy of each key when iterated (what an open stream holds).
    upstream = await raw_upstream(keep_alive(ok(extra=b"X-Trace: 1\r\n")))
    pool = make_pool(upstream.url)
    names = []
    for _ in range(2):
        response = await send(pool)
        names.append([name for name, _ in response.header_list])
        await response.read()
        response.release()
    first, second = names
    assert first == ["Content-Length", "X-Trace"]
    assert all(a is b and isinstance(a, istr) for a, b in zip(first, second, strict=True))


async def test_a_released_answer_leaves_its_connection_open_for_the_next(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    upstream = await raw_upstream(keep_alive(ok(b"x" * 1000)))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert await response.read() == b"x" * 1000
    response.release()
    assert response.closed
    assert await response.chunk() == b""
    # Idle in the pool, not closed: the upstream sees no end of the connection.
    assert not await eventually(upstream.peers[0].eof, 0.2)
    assert await fetch(pool) == (200, b"x" * 1000)
    assert len(upstream.peers) == 1


async def test_closing_an_unread_answer_closes_its_connection(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    upstream = await raw_upstream(keep_alive(ok(b"unread body")))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.status == 200
    response.close()
    assert response.closed
    assert await eventually(upstream.peers[0].eof)
    assert await fetch(pool) == (200, b"unread body")
    assert len(upstream.peers) == 2


async def test_releasing_an_answer_before_its_end_closes_its_connection(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def partial(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await peer.until_eof()

    upstream = await raw_upstream(per_connection(partial, keep_alive(ok())))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert await response.chunk() == b"half"
    response.release()  # 6 bytes still to come: the connection cannot carry another request
    assert await eventually(upstream.peers[0].eof)
    assert await fetch(pool) == (200, b"hi")
    assert len(upstream.peers) == 2


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"bye", b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_an_answer_ending_the_connection_is_not_reused(
    raw_upstream: StartRaw, make_pool: MakePool, answer: bytes
) -> None:
    # The upstream leaves the socket open: only the head says not to reuse it.
    upstream = await raw_upstream(keep_alive(answer))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"bye")
    assert await eventually(upstream.peers[0].eof)  # the client closed it
    assert await fetch(pool) == (200, b"bye")
    assert len(upstream.peers) == 2
    assert [len(peer.requests) for peer in upstream.peers] == [1, 1]


async def test_an_http_1_0_answer_with_keep_alive_is_reused(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    answer = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nyes"
    upstream = await raw_upstream(keep_alive(answer))
    pool = make_pool(upstream.url)
    assert [await fetch(pool) for _ in range(2)] == [(200, b"yes")] * 2
    assert len(upstream.peers) == 1


async def test_keepalive_timeout_closes_idle_connections(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    upstream = await raw_upstream(keep_alive(ok()))
    pool = make_pool(upstream.url, keepalive_timeout=0.2)
    assert await fetch(pool) == (200, b"hi")
    await asyncio.sleep(0.5)
    # Closed by the pool while idle, not only skipped by the next request.
    assert await eventually(upstream.peers[0].eof)
    assert await fetch(pool) == (200, b"hi")
    assert len(upstream.peers) == 2


async def test_a_connection_within_the_keepalive_timeout_is_reused(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    upstream = await raw_upstream(keep_alive(ok()))
    pool = make_pool(upstream.url, keepalive_timeout=5)
    assert await fetch(pool) == (200, b"hi")
    await asyncio.sleep(0.3)
    assert await fetch(pool) == (200, b"hi")
    assert len(upstream.peers) == 1


# -- kept-alive connections the upstream closed -------------------------------------


async def answer_then_drop_the_next(peer: Peer) -> None:
    """Answer the first request; read the second one whole, then hang up without answering."""
    await peer.read_request()
    await peer.send(ok(b"first"))
    await peer.read_request()


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PUT", b"idempotent"), ("DELETE", None)]
)
async def test_an_idempotent_request_on_a_dropped_connection_is_sent_again(
    raw_upstream: StartRaw, make_pool: MakePool, method: str, body: bytes | None
) -> None:
    upstream = await raw_upstream(per_connection(answer_then_drop_the_next, keep_alive(ok())))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"first")
    assert await fetch(pool, method, body=body) == (200, b"hi")
    assert len(upstream.peers) == 2
    assert [len(peer.requests) for peer in upstream.peers] == [2, 1]
    assert upstream.peers[1].requests[0][0].startswith(method.encode() + b" / HTTP/1.1")


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", lambda: b"charge the card once"),
        ("PATCH", lambda: b"charge the card once"),
        ("PUT", lambda: stream(b"charge the card ", b"once")),  # a stream cannot be replayed
    ],
    ids=["post", "patch", "streamed-put"],
)
async def test_a_non_idempotent_request_is_never_sent_twice(
    raw_upstream: StartRaw, make_pool: MakePool, method: str, body: Callable[[], Body]
) -> None:
    upstream = await raw_upstream(per_connection(answer_then_drop_the_next, keep_alive(ok())))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"first")
    with pytest.raises(UpstreamClosed):
        await fetch(pool, method, body=body())
    assert len(upstream.peers) == 1
    sent = [b for b in upstream.peers[0].bodies if b]
    assert sent == [b"charge the card once"]


async def test_a_connection_the_upstream_closed_while_idle_is_not_used(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    done = asyncio.Event()

    async def answer_then_close(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"first"))  # keep-alive by default: the close comes unannounced
        done.set()

    upstream = await raw_upstream(per_connection(answer_then_close, keep_alive(ok())))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"first")
    assert await eventually(done)
    await asyncio.sleep(0.1)  # the FIN reaches the client
    # The pool noticed the close: even a POST goes out, once, on a new connection.
    assert await fetch(pool, "POST", body=b"once") == (200, b"hi")
    assert len(upstream.peers) == 2
    assert [p.bodies for p in upstream.peers] == [[b""], [b"once"]]


# -- framing of answers -------------------------------------------------------------


async def test_a_chunked_answer_is_streamed_and_the_connection_reused(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    gate = asyncio.Event()

    async def chunked(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await gate.wait()
            await peer.send(b"6\r\n world\r\n0\r\n\r\n")

    upstream = await raw_upstream(chunked)
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.content_length is None
    # The rest is held back until the gate opens: nothing waits for the whole body.
    assert await asyncio.wait_for(response.chunk(), BOUND) == b"hello"
    gate.set()
    assert await asyncio.wait_for(response.read(), BOUND) == b" world"
    response.release()
    assert await fetch(pool) == (200, b"hello world")
    assert len(upstream.peers) == 1


async def test_a_close_delimited_answer_ends_with_the_connection(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def until_close(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\n\r\n", b"first part, ", b"second part", pause=0.05)

    upstream = await raw_upstream(until_close)
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.content_length is None
    assert await asyncio.wait_for(response.read(), BOUND) == b"first part, second part"
    response.release()
    assert await fetch(pool) == (200, b"first part, second part")
    assert len(upstream.peers) == 2


async def test_a_head_answer_has_no_body_and_its_connection_is_not_reused(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
    upstream = await raw_upstream(per_connection(keep_alive(head_answer), keep_alive(ok(b"after"))))
    pool = make_pool(upstream.url)
    async with asyncio.timeout(BOUND):
        response = await send(pool, "HEAD")
        assert response.content_length == 5  # the length a GET would have had
        assert await response.read() == b""
    response.release()
    assert await eventually(upstream.peers[0].eof)
    assert await fetch(pool) == (200, b"after")
    assert len(upstream.peers) == 2


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
async def test_answers_without_a_body_keep_the_connection(
    raw_upstream: StartRaw, make_pool: MakePool, status: bytes
) -> None:
    upstream = await raw_upstream(keep_alive(b"HTTP/1.1 %b\r\n\r\n" % status, ok(b"next")))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (int(status[:3]), b"")
    assert await fetch(pool) == (200, b"next")
    assert len(upstream.peers) == 1


@pytest.mark.parametrize("together", [True, False], ids=["one-write", "two-writes"])
@pytest.mark.parametrize("interim", [b"100 Continue", b"103 Early Hints"])
async def test_interim_answers_are_skipped(
    raw_upstream: StartRaw, make_pool: MakePool, interim: bytes, together: bool
) -> None:
    first = b"HTTP/1.1 %b\r\nX-Interim: yes\r\n\r\n" % interim
    final = b"HTTP/1.1 201 Created\r\nX-Final: yes\r\nContent-Length: 4\r\n\r\ndone"

    async def answer(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(first + final if together else first, b"" if together else final)

    upstream = await raw_upstream(answer)
    pool = make_pool(upstream.url)
    response = await send(pool, "POST", body=b"data")
    assert (response.status, response.reason) == (201, "Created")
    assert "X-Interim" not in response.headers
    assert response.headers["X-Final"] == "yes"
    assert await asyncio.wait_for(response.read(), BOUND) == b"done"
    response.release()
    assert await fetch(pool) == (201, b"done")
    assert len(upstream.peers) == 1


@pytest.mark.parametrize(
    "head",
    [
        # Many ordinary headers, together over the limit (the connection stays open).
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(b"X-H%05d: %b\r\n" % (n, b"v" * 100) for n in range(MAX_HEAD_SIZE // 100))
        + b"Content-Length: 2\r\n\r\nhi",
        # One header that never ends.
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (3 * MAX_HEAD_SIZE),
    ],
    ids=["many-headers", "endless-header"],
)
async def test_an_answer_head_over_the_limit_is_a_protocol_error(
    raw_upstream: StartRaw, make_pool: MakePool, head: bytes
) -> None:
    async def answer(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(head)
        await peer.until_eof()

    upstream = await raw_upstream(answer)
    pool = make_pool(upstream.url)
    task = await finishes(send(pool))
    with pytest.raises(UpstreamProtocolError):
        task.result()
    assert await eventually(upstream.peers[0].eof)


async def test_an_answer_head_under_the_limit_is_accepted(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    big = b"v" * (MAX_HEAD_SIZE // 2)
    upstream = await raw_upstream(keep_alive(ok(b"fine", b"X-Big: %b\r\n" % big)))
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert response.headers["X-Big"] == big.decode()
    assert await response.read() == b"fine"
    response.release()


@pytest.mark.parametrize(
    "garbage",
    [b"GARBAGE\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"],
    ids=["junk", "a-second-answer"],
)
async def test_bytes_after_an_answer_never_reach_the_next_request(
    raw_upstream: StartRaw, make_pool: MakePool, garbage: bytes
) -> None:
    async def answer(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"first") + garbage)  # in one write: the client reads them together
        await keep_alive(ok(b"second"))(peer)

    upstream = await raw_upstream(per_connection(answer, keep_alive(ok(b"second"))))
    pool = make_pool(upstream.url)
    # The first exchange may fail (its last read carried the garbage); the next ones
    # must get their own answers.
    with contextlib.suppress(UpstreamProtocolError):
        assert await fetch(pool) == (200, b"first")
    for _ in range(2):
        assert await fetch(pool) == (200, b"second")


async def test_a_second_answer_in_the_same_read_never_passes_for_the_first(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    second = b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\nContent-Length: 0\r\n\r\n"
    upstream = await raw_upstream(keep_alive(ok(b"first", b"X-Which: first\r\n") + second))
    pool = make_pool(upstream.url)
    try:
        response = await send(pool)
    except UpstreamProtocolError:
        return  # refusing the whole exchange is fine
    body = await response.read()
    response.release()
    assert (response.status, body) == (200, b"first")
    assert response.headers.getall("X-Which") == ["first"]
    assert "Location" not in response.headers


async def test_an_answer_sent_to_an_idle_connection_is_never_served(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    released = asyncio.Event()
    sent = asyncio.Event()

    async def answer(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"first"))
        await released.wait()
        await peer.send(ok(b"unsolicited"))  # nobody asked
        sent.set()
        await keep_alive(ok(b"second"))(peer)

    upstream = await raw_upstream(per_connection(answer, keep_alive(ok(b"second"))))
    pool = make_pool(upstream.url)
    assert await fetch(pool) == (200, b"first")
    released.set()
    assert await eventually(sent)
    await asyncio.sleep(0.1)  # the bytes reach the idle connection
    try:
        answer_to_second = await fetch(pool)
    except (UpstreamProtocolError, UpstreamClosed):
        return  # failing the request is acceptable; serving the unsolicited answer is not
    assert answer_to_second == (200, b"second")


async def test_a_body_cut_short_is_an_error_not_an_end(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def short(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    upstream = await raw_upstream(short)
    pool = make_pool(upstream.url)
    response = await send(pool)
    assert await response.chunk() == b"only this"
    with pytest.raises(UpstreamClosed):
        await asyncio.wait_for(response.chunk(), BOUND)
    response.release()


async def test_a_chunked_body_cut_short_is_an_error(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def short(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")

    upstream = await raw_upstream(short)
    pool = make_pool(upstream.url)
    response = await send(pool)
    with pytest.raises(UpstreamClosed):
        await asyncio.wait_for(response.read(), BOUND)
    response.close()


async def test_an_upgrade_answer_is_a_protocol_error(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    upstream = await raw_upstream(keep_alive(switch))
    pool = make_pool(upstream.url)
    with pytest.raises(UpstreamProtocolError):
        await asyncio.wait_for(send(pool), BOUND)


# -- the request's head -------------------------------------------------------------


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The request line and the header fields of a request head."""
    assert head.endswith(b"\r\n\r\n")
    line, *fields = head[:-4].decode().split("\r\n")
    return line, [(name, value.strip()) for name, _, value in (f.partition(":") for f in fields)]


def values(fields: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in fields if key.lower() == name.lower()]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://127.0.0.1:80/", "127.0.0.1"),
        ("http://example.com:443/", "example.com:443"),
        ("https://example.com/", "example.com"),
        ("https://example.com:443/", "example.com"),
        ("https://example.com:8443/", "example.com:8443"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://[::1]/", "[::1]"),
        ("https://[2001:db8::1]/", "[2001:db8::1]"),
    ],
)
async def test_the_host_header_names_the_origin(make_pool: MakePool, url: str, host: str) -> None:
    pool = make_pool(url)
    assert pool.host_header == host
    head, chunked = request_head("GET", "/p?q=1", pool.host_header, CIMultiDict(), None)
    assert not chunked
    line, fields = parse_head(head)
    assert line == "GET /p?q=1 HTTP/1.1"
    assert fields == [("Host", host)]


def test_a_host_header_given_is_kept() -> None:
    headers = CIMultiDict({"host": "client.example", "X-A": "1"})
    head, _ = request_head("GET", "/", "127.0.0.1:8080", headers, None)
    _, fields = parse_head(head)
    assert values(fields, "Host") == ["client.example"]
    assert values(fields, "X-A") == ["1"]


def test_a_body_given_whole_has_its_own_content_length() -> None:
    headers = CIMultiDict([("Content-Length", "999"), ("content-length", "3"), ("X-A", "1")])
    head, chunked = request_head("POST", "/", "h", headers, b"hello")
    assert not chunked
    _, fields = parse_head(head)
    assert values(fields, "Content-Length") == ["5"]
    assert values(fields, "Transfer-Encoding") == []
    assert values(fields, "X-A") == ["1"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_request_that_may_carry_a_body_but_has_none_says_so(method: str) -> None:
    head, chunked = request_head(method, "/", "h", CIMultiDict(), None)
    assert not chunked
    assert values(parse_head(head)[1], "Content-Length") == ["0"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_request_without_a_body_gets_no_length(method: str) -> None:
    head, chunked = request_head(method, "/", "h", CIMultiDict(), None)
    assert not chunked
    _, fields = parse_head(head)
    assert values(fields, "Content-Length") == values(fields, "Transfer-Encoding") == []


def test_a_stream_without_a_length_goes_chunked() -> None:
    head, chunked = request_head("POST", "/", "h", CIMultiDict(), stream(b"x"))
    assert chunked
    _, fields = parse_head(head)
    assert values(fields, "Transfer-Encoding") == ["chunked"]
    assert values(fields, "Content-Length") == []


def test_a_stream_with_a_length_goes_as_it_is() -> None:
    head, chunked = request_head("POST", "/", "h", CIMultiDict({"Content-Length": "1"}), stream())
    assert not chunked
    _, fields = parse_head(head)
    assert values(fields, "Content-Length") == ["1"]
    assert values(fields, "Transfer-Encoding") == []


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/", {"X-A": "a\r\nX-Injected: 1"}),
        ("/", {"X-A": "a\nX-Injected: 1"}),
        ("/", {"X-A": "a\rb"}),
        ("/", {"X-A\r\nX-Injected": "1"}),
        ("/", {"Host": "h\r\nX-Injected: 1"}),
        ("/ HTTP/1.1\r\nX-Injected: 1\r\nX:", {}),
    ],
)
@pytest.mark.parametrize("body", [None, b"body"])
def test_a_line_break_in_the_head_is_refused(
    target: str, headers: dict[str, str], body: bytes | None
) -> None:
    with pytest.raises(BadRequestHead):
        request_head("POST", target, "h", CIMultiDict(headers), body)


class Recorder:
    """An aiohttp upstream that records each request, and the connections they came on."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, CIMultiDict[str], bytes]] = []
        self.transports: list[object] = []  # kept referenced: one object per connection
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    @property
    def connections(self) -> int:
        return len({id(transport) for transport in self.transports})

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, CIMultiDict(request.headers), body))
        self.transports.append(request.transport)
        return web.Response(body=b"got %d" % len(body))


@pytest.fixture
async def recorder(serve_app: ServeApp) -> tuple[Recorder, str]:
    upstream = Recorder()
    return upstream, await serve_app(upstream.app)


@pytest.mark.parametrize(
    "parts",
    [
        [b"alpha", b"", b"beta" * 1000, bytes(range(256))],
        [bytes([n]) * 65536 for n in range(40)],  # 2.5 MB: the writes outrun the socket
    ],
    ids=["small", "large"],
)
@pytest.mark.parametrize("with_length", [False, True], ids=["chunked", "raw"])
async def test_a_streamed_body_arrives_exactly(
    recorder: tuple[Recorder, str], make_pool: MakePool, parts: list[bytes], with_length: bool
) -> None:
    upstream, url = recorder
    pool = make_pool(url)
    expected = b"".join(parts)
    headers = {"Content-Length": str(len(expected))} if with_length else {}
    status, answer = await fetch(pool, "POST", headers=headers, body=stream(*parts))
    assert (status, answer) == (200, b"got %d" % len(expected))
    method, seen, body = upstream.requests[-1]
    assert method == "POST"
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(expected).hexdigest()
    if with_length:
        assert seen.getall("Content-Length") == [str(len(expected))]
        assert "Transfer-Encoding" not in seen
    else:
        assert seen.getall("Transfer-Encoding") == ["chunked"]
        assert "Content-Length" not in seen
    # A streamed request leaves the connection reusable too.
    assert await fetch(pool, "POST", body=b"again") == (200, b"got 5")
    assert upstream.connections == 1


async def test_a_body_given_whole_arrives_with_its_length(
    recorder: tuple[Recorder, str], make_pool: MakePool
) -> None:
    upstream, url = recorder
    pool = make_pool(url)
    headers = {"Content-Length": "1", "X-Kept": "yes"}  # a stale length is replaced
    assert await fetch(pool, "PUT", headers=headers, body=b"\x00\r\n" * 10) == (200, b"got 30")
    _, seen, body = upstream.requests[-1]
    assert body == b"\x00\r\n" * 10
    assert seen["Content-Length"] == "30"
    assert seen["X-Kept"] == "yes"
    assert seen["Host"] == f"127.0.0.1:{URL(url).port}"


# -- answers that come before the request's body is sent ------------------------------


async def test_an_early_answer_leaves_no_part_of_the_request_in_the_connection(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    """An upstream may answer before it read the body (a 401, a 413).  Then the
    connection is only reusable once the whole body went out: else the next request
    lands inside the previous one's body (a request desync, as in HTTP smuggling).
    """

    async def answer_early(peer: Peer) -> None:
        head = await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(ok(b"early"))
        try:
            body = await peer.reader.readexactly(10)  # the Content-Length the head gave
        except asyncio.IncompleteReadError as exc:
            body = exc.partial  # the client gave up on the body and closed: fine
        peer.requests.append((head, body))
        await keep_alive(ok(b"next"))(peer)

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"aaaaa"
        await asyncio.sleep(0.2)  # the upstream answers meanwhile
        yield b"bbbbb"

    upstream = await raw_upstream(per_connection(answer_early, keep_alive(ok(b"next"))))
    pool = make_pool(upstream.url)
    headers = {"Content-Length": "10"}
    assert await fetch(pool, "POST", headers=headers, body=slow_body()) == (200, b"early")
    assert await fetch(pool, target="/next") == (200, b"next")
    post_body = upstream.peers[0].requests[0][1]
    assert b"aaaaabbbbb".startswith(post_body), post_body
    heads = [head.split(b"\r\n")[0] for head, _ in upstream.requests]
    assert b"GET /next HTTP/1.1" in heads


async def fast_upload() -> AsyncIterator[bytes]:
    for _ in range(256):  # 16 MB: far more than the socket buffers hold
        yield b"x" * 65536


async def test_an_early_answer_to_an_upload_is_returned(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def refuse(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await hang(peer)  # and reads no more of the body

    upstream = await raw_upstream(refuse)
    pool = make_pool(upstream.url)
    task = await finishes(send(pool, "POST", body=fast_upload(), idle_timeout=0.2), bound=1.5)
    response = task.result()
    assert response.status == 413
    assert await response.read() == b"big"
    response.release()


async def test_an_early_answer_then_a_close_is_returned(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def refuse_and_close(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")
        # (Closing with the body unread makes the kernel reset the connection.)

    upstream = await raw_upstream(refuse_and_close)
    pool = make_pool(upstream.url)
    task = await finishes(send(pool, "POST", body=fast_upload(), idle_timeout=0.2), bound=1.5)
    response = task.result()
    assert response.status == 413
    assert await response.read() == b"big"
    response.release()


async def test_an_early_answer_is_returned_while_the_body_is_still_coming(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    more = asyncio.Event()  # never set during the test: the client has stalled

    async def slow_client() -> AsyncIterator[bytes]:
        yield b"first part"
        await more.wait()
        yield b"second part"

    async def refuse(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
        await hang(peer)

    upstream = await raw_upstream(refuse)
    pool = make_pool(upstream.url)
    task = await finishes(send(pool, "POST", body=slow_client(), idle_timeout=5), bound=1.5)
    response = task.result()
    assert response.status == 401
    assert await response.read() == b"no"
    response.close()


async def test_an_upstream_that_stops_reading_an_upload_times_out(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def stop_reading(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await hang(peer)

    upstream = await raw_upstream(stop_reading)
    pool = make_pool(upstream.url)
    idle = 0.1
    task = await finishes(send(pool, "POST", body=fast_upload(), idle_timeout=idle), 1.5)
    with pytest.raises(TimeoutError):
        task.result()


# -- idle timeouts --------------------------------------------------------------------


async def test_an_upstream_that_never_answers_times_out(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def silent(peer: Peer) -> None:
        await peer.read_request()
        await peer.until_eof()

    upstream = await raw_upstream(silent)
    pool = make_pool(upstream.url)
    idle = 0.3
    started = time.monotonic()
    task = await finishes(send(pool, idle_timeout=idle))
    with pytest.raises(TimeoutError):
        task.result()
    assert time.monotonic() - started < idle * 4 + 1
    assert await eventually(upstream.peers[0].eof)  # the connection was dropped


async def test_a_body_that_stalls_times_out(raw_upstream: StartRaw, make_pool: MakePool) -> None:
    async def stall(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome bytes")
        await peer.until_eof()

    upstream = await raw_upstream(stall)
    pool = make_pool(upstream.url)
    idle = 0.3
    response = await send(pool, idle_timeout=idle)
    assert await response.chunk() == b"some bytes"
    started = time.monotonic()
    task = await finishes(response.chunk())
    with pytest.raises(TimeoutError):
        task.result()
    assert time.monotonic() - started < idle * 4 + 1
    response.release()
    assert await eventually(upstream.peers[0].eof)
    # The slot and the pool are fine afterwards: the next request opens a new connection.
    with pytest.raises(TimeoutError):
        await (await finishes(fetch(pool, idle_timeout=idle)))


async def test_a_trickling_upstream_does_not_time_out(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    """The idle timeout bounds each silence, not the whole answer."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"

    async def trickle(peer: Peer) -> None:
        await peer.read_request()
        # The head alone takes longer than the idle timeout, and so does the body.
        parts = [head[n : n + 8] for n in range(0, len(head), 8)] + [b"a", b"b", b"c", b"d", b"e"]
        assert len(parts) == 10
        await peer.send(*parts, pause=0.1)  # nine pauses: about 1 s in all
        await peer.until_eof()

    upstream = await raw_upstream(trickle)
    pool = make_pool(upstream.url)
    task = await finishes(fetch(pool, idle_timeout=0.3))
    assert task.result() == (200, b"abcde")


async def test_a_shorter_idle_timeout_applies_on_a_reused_connection(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def answer_then_stall(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok())
        await peer.read_request()
        await peer.until_eof()

    upstream = await raw_upstream(answer_then_stall)
    pool = make_pool(upstream.url)
    assert await fetch(pool, idle_timeout=1.5) == (200, b"hi")
    started = time.monotonic()
    task = await finishes(send(pool, idle_timeout=0.1))
    with pytest.raises(TimeoutError):
        task.result()
    assert len(upstream.peers) == 1  # it was the reused connection
    assert time.monotonic() - started < 0.1 * 4 + 0.5


# -- connecting -------------------------------------------------------------------------


async def test_a_closed_port_is_a_connect_error(make_pool: MakePool) -> None:
    pool = make_pool(f"http://127.0.0.1:{free_port()}/", limit=1)
    for _ in range(2):  # the failed attempt gives its slot back
        task = await finishes(send(pool))
        with pytest.raises(UpstreamConnectError) as caught:
            task.result()
        assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def assert_connect_timeout(error: BaseException | None) -> None:
    """A connect timeout is a `TimeoutError` (the forwarder answers 504), not a refusal."""
    assert isinstance(error, TimeoutError), repr(error)
    assert not isinstance(error, UpstreamConnectError)


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: connecting hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        with socket.create_connection(("127.0.0.1", port)):  # fills the backlog of one
            yield port


async def test_a_connect_timeout(make_pool: MakePool, full_backlog: int) -> None:
    # (The brief's 10.255.255.1 is no use here: the sandbox answers every outbound
    # connection.  A full listen backlog makes the kernel drop the SYN instead.)
    pool = make_pool(f"http://127.0.0.1:{full_backlog}/")
    started = time.monotonic()
    task = await finishes(send(pool, connect_timeout=0.2), bound=2)
    assert_connect_timeout(task.exception())
    assert time.monotonic() - started < 2


async def test_a_tls_handshake_that_never_ends_is_a_connect_timeout(
    raw_upstream: StartRaw, make_pool: MakePool, authority: trustme.CA
) -> None:
    upstream = await raw_upstream(hang)  # accepts, then never answers the ClientHello
    context = ssl.create_default_context()
    authority.configure_trust(context)
    pool = make_pool(f"https://127.0.0.1:{upstream.port}/", tls=context)
    task = await finishes(send(pool, connect_timeout=0.2), bound=2)
    assert_connect_timeout(task.exception())


async def test_a_proxy_that_never_answers_is_a_connect_timeout(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    proxy = await raw_upstream(hang)
    pool = make_pool("http://127.0.0.1:1/", proxy=f"socks5://127.0.0.1:{proxy.port}")
    task = await finishes(send(pool, connect_timeout=0.2), bound=2)
    assert_connect_timeout(task.exception())


async def test_a_proxy_that_cannot_be_reached_is_the_proxys_error(make_pool: MakePool) -> None:
    pool = make_pool("http://127.0.0.1:1/", proxy=f"socks5://127.0.0.1:{free_port()}")
    with pytest.raises(python_socks.ProxyConnectionError):
        await asyncio.wait_for(send(pool), BOUND)


# -- backpressure ---------------------------------------------------------------------


async def test_a_slow_reader_pauses_the_upstream(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    size = 5 * 1024 * 1024
    piece = 64 * 1024
    written = 0
    finished = asyncio.Event()

    async def firehose(peer: Peer) -> None:
        nonlocal written
        # A small send buffer on the upstream's side, so that what it manages to write
        # is what the client took in (its kernel buffer grows to megabytes).
        peer.writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024
        )
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for offset in range(0, size, piece):
            peer.writer.write(bytes([offset // piece % 256]) * piece)
            await peer.writer.drain()
            written += piece
        finished.set()
        await peer.until_eof()

    upstream = await raw_upstream(firehose)
    pool = make_pool(upstream.url)
    response = await send(pool)
    await asyncio.sleep(0.5)  # nobody reads
    assert not finished.is_set()
    assert written < size // 2, written
    body = await asyncio.wait_for(response.read(), BOUND)
    response.release()
    assert len(body) == size
    expected = b"".join(bytes([n % 256]) * piece for n in range(size // piece))
    assert body == expected
    assert finished.is_set()


# -- the limit ------------------------------------------------------------------------


async def test_the_limit_holds_a_request_until_an_answer_is_released(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    upstream = await raw_upstream(keep_alive(ok()))
    pool = make_pool(upstream.url, limit=2)
    events: list[str] = []
    first = await send(pool)
    second = await send(pool)

    async def third() -> UpstreamResponse:
        response = await send(pool)
        events.append("third answered")
        return response

    waiting = asyncio.ensure_future(third())
    done, _ = await asyncio.wait({waiting}, timeout=0.3)
    assert not done
    assert len(upstream.peers) == 2
    events.append("first released")
    assert await first.read() == b"hi"
    first.release()
    response = await asyncio.wait_for(waiting, BOUND)
    assert events == ["first released", "third answered"]
    assert await response.read() == b"hi"
    response.release()
    second.release()
    assert len(upstream.peers) == 2  # the third took the first's connection
    assert upstream.most_open == 2


async def test_every_way_of_finishing_frees_the_slot(
    raw_upstream: StartRaw, make_pool: MakePool
) -> None:
    async def handler(peer: Peer) -> None:
        while request := await peer.read_request():
            if request[0].startswith(b"GET /silent "):
                await peer.until_eof()
                return
            await peer.send(ok())

    upstream = await raw_upstream(handler)
    pool = make_pool(upstream.url, limit=1)
    (await finishes(send(pool))).result().release()
    (await finishes(send(pool))).result().close()
    silent = await finishes(send(pool, target="/silent", idle_timeout=0.2))
    assert isinstance(silent.exception(), TimeoutError)
    task = await finishes(fetch(pool))
    assert task.result() == (200, b"hi")


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture
async def https_recorder(authority: trustme.CA) -> AsyncIterator[tuple[Recorder, str]]:
    upstream = Recorder()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    server = TestServer(upstream.app, host="127.0.0.1")
    await server.start_server(ssl=server_context)
    yield upstream, f"https://127.0.0.1:{server.port}/"
    await server.close()


async def test_https_with_a_trusted_certificate(
    https_recorder: tuple[Recorder, str], authority: trustme.CA, make_pool: MakePool
) -> None:
    upstream, url = https_recorder
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    pool = make_pool(url, tls=client_context)
    answers = [await fetch(pool, "POST", body=b"secret %d" % n) for n in range(3)]
    assert answers == [(200, b"got 8")] * 3
    assert [body for _, _, body in upstream.requests] == [b"secret 0", b"secret 1", b"secret 2"]
    assert upstream.connections == 1


async def test_https_with_an_untrusted_certificate_is_a_connect_error(
    https_recorder: tuple[Recorder, str], make_pool: MakePool
) -> None:
    upstream, url = https_recorder
    pool = make_pool(url, tls=ssl.create_default_context())  # does not trust the test CA
    with pytest.raises(UpstreamConnectError) as caught:
        await asyncio.wait_for(send(pool), BOUND)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert upstream.requests == []


async def test_https_to_the_wrong_name_is_a_connect_error(
    authority: trustme.CA, make_pool: MakePool
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("other.example").configure_cert(server_context)
    upstream = Recorder()
    server = TestServer(upstream.app, host="127.0.0.1")
    await server.start_server(ssl=server_context)
    try:
        client_context = ssl.create_default_context()
        authority.configure_trust(client_context)
        pool = make_pool(f"https://127.0.0.1:{server.port}/", tls=client_context)
        with pytest.raises(UpstreamConnectError) as caught:
            await asyncio.wait_for(send(pool), BOUND)
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await server.close()


# -- proxies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "tls"), [("socks5", False), ("http", False), ("socks5", True), ("http", True)]
)
async def test_through_a_proxy_connections_are_kept_alive(
    start_proxy: StartProxy,
    recorder: tuple[Recorder, str],
    https_recorder: tuple[Recorder, str],
    authority: trustme.CA,
    make_pool: MakePool,
    scheme: str,
    tls: bool,
) -> None:
    upstream, url = https_recorder if tls else recorder
    context = None
    if tls:
        context = ssl.create_default_context()
        authority.configure_trust(context)
    proxy: ProxyServer = await start_proxy(scheme)
    pool = make_pool(url, proxy=proxy.url, tls=context)
    answers = [await fetch(pool, "POST", body=b"via %d" % n) for n in range(3)]
    assert answers == [(200, b"got 5")] * 3
    assert [body for _, _, body in upstream.requests] == [b"via 0", b"via 1", b"via 2"]
    assert upstream.connections == 1
    assert await proxy.tunnels_to(URL(url).port or 0) == 1, proxy.log
