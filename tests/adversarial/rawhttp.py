"""Raw-socket HTTP/1.1 for adversarial tests: exact bytes out, a strict reading back.

HTTP clients refuse or tidy up the malformed requests these tests need, so the
client here writes bytes as given and parses the answer itself.  It tells a body
that ended cleanly (``Content-Length`` reached, the zero-length chunk read) from
one whose connection was cut first (``aborted``), which is how a gateway signals
an incomplete answer.

`ScriptedUpstream` is the other side: a TCP server whose every connection is
handed to a coroutine that writes whatever bytes a test wants, broken framing
included, and that records what each connection received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

_READ_LIMIT = 1 << 22


@attrs.define
class RawResponse:
    """One answer as it came off the wire."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: The body's framing ended it (or the connection closed a close-delimited body).
    complete: bool = False
    #: The connection was closed or reset before the framing said the body was over.
    aborted: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), else ``None``."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One TCP connection to a server: write exact bytes, read answers with a timeout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        #: Every byte read from the server so far, for "no traceback" checks.
        self.received = bytearray()
        self.closed_at: float | None = None

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=_READ_LIMIT)
        return cls(reader, writer)

    async def __aenter__(self) -> RawConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def trickle(self, data: bytes, delay: float, step: int = 1) -> bool:
        """Send ``data`` ``step`` bytes at a time, ``delay`` seconds apart.

        Returns False as soon as the server has closed the connection.
        """
        for start in range(0, len(data), step):
            if self.reader.at_eof():
                return False
            try:
                await self.send(data[start : start + step])
            except ConnectionError:
                return False
            await asyncio.sleep(delay)
        return True

    def finish_sending(self) -> None:
        """Half-close: the server reads EOF, and may still answer."""
        self.writer.write_eof()

    def close(self) -> None:
        """Close our side (a FIN; the server sees the client going away)."""
        if self.closed_at is None:
            self.closed_at = time.perf_counter()
        self.writer.close()

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        self.closed_at = time.perf_counter()
        self.writer.transport.abort()

    async def _line(self) -> bytes:
        line = await self.reader.readuntil(b"\n")
        self.received += line
        return line

    async def _exactly(self, size: int) -> bytes:
        data = await self.reader.readexactly(size)
        self.received += data
        return data

    async def read_response(self, timeout: float = 5.0, head: bool = False) -> RawResponse:
        """Read one answer; raises `TimeoutError` when none comes in ``timeout`` seconds,
        `asyncio.IncompleteReadError` when the connection ends before a whole head.
        """
        async with asyncio.timeout(timeout):
            response = await self._head()
            await self._read_body(response, head)
            return response

    async def read_head(self, timeout: float = 5.0) -> RawResponse:
        """Read only the status line and headers of an answer (its body stays unread)."""
        async with asyncio.timeout(timeout):
            return await self._head()

    async def read_some(self, timeout: float = 5.0) -> bytes:
        """Whatever bytes arrive next (b"" at the end of the connection)."""
        async with asyncio.timeout(timeout):
            data = await self.reader.read(65536)
        self.received += data
        return data

    async def _head(self) -> RawResponse:
        status_line = (await self._line()).decode("latin-1").rstrip("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {status_line!r}")
        code, _, reason = rest.partition(" ")
        headers: list[tuple[str, str]] = []
        while True:
            line = (await self._line()).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return RawResponse(int(code), reason, headers)

    async def _read_body(self, response: RawResponse, head: bool) -> None:
        if head or response.status in (204, 304) or response.status < 200:
            response.complete = True
            return
        encoding = (response.header("Transfer-Encoding") or "").lower()
        length = response.header("Content-Length")
        body = bytearray()
        try:
            if "chunked" in encoding:
                await self._chunked(body)
            elif length is not None:
                body += await self._exactly(int(length))
            else:
                body += await self.reader.read()
                self.received += body
            response.complete = True
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            partial = getattr(exc, "partial", b"")
            self.received += partial
            # A partial chunk-size line or CRLF is framing, not body.
            if "chunked" not in encoding:
                body += partial
            response.aborted = True
        response.body = bytes(body)

    async def _chunked(self, body: bytearray) -> None:
        while True:
            size = int((await self._line()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await self._line()).strip():  # trailers, then the blank line
                    pass
                return
            try:
                body += await self._exactly(size)
            except asyncio.IncompleteReadError as exc:
                body += exc.partial
                self.received += exc.partial
                raise asyncio.IncompleteReadError(b"", None) from None
            await self._exactly(2)

    async def server_closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (reads EOF) within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    data = await self.reader.read(65536)
                    self.received += data
                    if not data:
                        return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """A request's head as an upstream reads it (up to the blank line)."""
    return await reader.readuntil(b"\r\n\r\n")


class ScriptedUpstream:
    """A TCP server that answers each connection with a test's script, byte for byte.

    Each connection's request head is read first (and kept in ``heads``); the script
    then gets the reader and the writer.  Leaving the ``async with`` block ends every
    script still running, so a test's "hang forever" upstream does not outlive it.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._closing.set()
        for writer in self._writers:
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=2)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        script = asyncio.ensure_future(self._run(reader, writer))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({script, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            script.cancel()
            closing.cancel()
            await asyncio.gather(script, closing, return_exceptions=True)
            writer.close()
            self._handlers.discard(handler)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            self.heads.append(await read_head(reader))
            await self.script(reader, writer)
