"""Reading request bodies within the configured size limit and idle timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import StreamReader, web

from gateway.errors import PayloadTooLarge, RequestTimeout


async def idle_limited(stream: StreamReader, idle: float) -> AsyncIterator[bytes]:
    """The chunks of ``stream``, raising `RequestTimeout` when one takes longer than ``idle``."""
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await stream.readany()
        except TimeoutError:
            raise RequestTimeout(f"the request body stalled for more than {idle:g} s") from None
        if not chunk:
            return
        yield chunk


async def read_limited(request: web.BaseRequest, limit: int, idle: float) -> bytes:
    """Read a whole request body; `PayloadTooLarge` past ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(limit)
    # Fast path: a small body usually arrives with the head and is buffered already;
    # taking it costs no await and no timer (a timed read costs microseconds).
    first = request.content.read_nowait(-1)
    if len(first) > limit:
        raise PayloadTooLarge(limit)
    if length is not None and len(first) == length:
        return first
    chunks: list[bytes] = [first] if first else []
    size = len(first)
    async for chunk in idle_limited(request.content, idle):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
