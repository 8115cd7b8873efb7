"""An upstream's answer: its head, and its body read chunk by chunk as it arrives."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from multidict import CIMultiDict, istr

from gateway.transport.failures import UpstreamProtocolError

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


class BodySource(Protocol):
    """Where an answer's body comes from: the connection it arrived on."""

    def take(self) -> Awaitable[bytes]:
        """Body bytes that arrived, waiting for some; b"" at the end of the body."""

    def release(self) -> None:
        """Done with the answer: keep the connection for the next request if it can be."""

    def abandon(self) -> None:
        """Done with the answer, read or not: close the connection."""


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
        connection: BodySource,
        status: int,
        reason: str,
        header_list: list[tuple[str, str]],
        content_length: int | None,
    ) -> None:
        self._connection: BodySource | None = connection
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
            connection.abandon()


async def _nothing() -> bytes:
    return b""


async def _given(data: bytes) -> bytes:
    return data
