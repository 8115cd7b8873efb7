"""Reading request bodies within the configured size limit and idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import HttpVersion11, StreamReader, web

from gateway.errors import PayloadTooLarge, RequestTimeout

if TYPE_CHECKING:
    from gateway.plugin import Exchange

# Bodies up to this size are read whole: cheaper than streaming, and replayable
# when a plugin asks for a retry on another credential.
SMALL_BODY = 256 * 1024


async def continue_if_expected(request: web.BaseRequest) -> None:
    """Send the ``100 Continue`` a client that sent ``Expect: 100-continue`` waits for.

    Called when the body is first needed, so that a request the plugins refuse
    first (no key, over a limit) is answered without inviting its body.  Once per
    request, and not when some of the body has come anyway.
    """
    if (
        request.version == HttpVersion11
        and request.body_exists
        and request.writer.output_size == 0  # (nothing sent yet: no 100 either)
        and request.content.total_bytes == 0
        and not request.content.is_eof()
        and request.headers.get("Expect", "").strip().lower() == "100-continue"
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def next_chunk(stream: StreamReader, idle: float) -> bytes:
    """The next bytes of ``stream`` (b"" at its end); `RequestTimeout` after ``idle`` silent."""
    try:
        async with asyncio.timeout(idle):
            return await stream.readany()
    except TimeoutError:
        raise RequestTimeout(f"the request body stalled for more than {idle:g} s") from None


async def idle_limited(stream: StreamReader, idle: float) -> AsyncIterator[bytes]:
    """The chunks of ``stream``, raising `RequestTimeout` when one takes longer than ``idle``."""
    while chunk := await next_chunk(stream, idle):
        yield chunk


async def read_upto(request: web.BaseRequest, size: int, idle: float) -> tuple[bytes, bool]:
    """The whole body if it ends within ``size`` bytes (and True), else its first bytes
    (a little over ``size``, and False): a body of unknown length is never held whole
    past ``size``.
    """
    stream = request.content
    await continue_if_expected(request)
    # Fast path: a small body usually arrives with the head and is buffered already;
    # taking it costs no await and no timer (a timed read costs microseconds).
    first = stream.read_nowait(-1)
    chunks = [first] if first else []
    total = len(first)
    while total <= size and not stream.at_eof():
        chunk = await next_chunk(stream, idle)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks), total <= size


async def read_limited(request: web.BaseRequest, limit: int, idle: float) -> bytes:
    """Read a whole request body; `PayloadTooLarge` past ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(limit)
    body, whole = await read_upto(request, limit, idle)
    if not whole:
        raise PayloadTooLarge(limit)
    return body


async def request_body(ex: Exchange) -> tuple[bytes | AsyncIterator[bytes] | None, bool]:
    """What to send upstream as the body, and whether it can be sent again.

    A body over `SMALL_BODY` streams, whether its length is known or not: a
    chunked one is read until it proves larger, then streamed from there.
    """
    request = ex.request
    if ex.body is None and request.body_exists:
        length = request.content_length
        if length is not None and length > SMALL_BODY:
            ex.bytes_in = length
            await continue_if_expected(request)
            return idle_limited(request.content, ex.body_idle_timeout), False
        if length is None:
            small = min(SMALL_BODY, ex.max_body_size)
            start, whole = await read_upto(request, small, ex.body_idle_timeout)
            if whole:
                ex.body = start
            elif small == ex.max_body_size:
                raise PayloadTooLarge(ex.max_body_size)
            else:
                return stream_rest(ex, start), False
        await ex.read_body()
    ex.bytes_in = len(ex.body or b"")
    return ex.body, True


async def stream_rest(ex: Exchange, start: bytes) -> AsyncIterator[bytes]:
    """A body of unknown length too large to hold: ``start``, then the rest as it comes."""
    ex.bytes_in = len(start)
    yield start
    async for chunk in idle_limited(ex.request.content, ex.body_idle_timeout):
        ex.bytes_in += len(chunk)
        if ex.bytes_in > ex.max_body_size:
            raise PayloadTooLarge(ex.max_body_size)
        yield chunk
