"""Reading request bodies within the configured size limit."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import PayloadTooLarge


async def read_limited(request: web.BaseRequest, limit: int) -> bytes:
    """Read a whole request body, raising `PayloadTooLarge` past ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
