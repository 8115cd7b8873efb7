"""Reading request bodies within the configured size limit and idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import StreamReader, web

from gateway.errors import PayloadTooLarge, RequestTimeout


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
