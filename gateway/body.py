"""Reading request bodies within the configured size limit and idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, StreamReader, web

from gateway.errors import PayloadTooLarge, RequestTimeout


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
