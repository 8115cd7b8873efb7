"""The body a request goes upstream with: whole and replayable, or streamed.

A body up to `SMALL_BODY` is read whole: cheaper than streaming, and it can be
sent again when a plugin asks for a retry (another credential, another
upstream).  A larger one streams, whether its length is known or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.body import continue_if_expected, idle_limited, read_upto
from gateway.errors import PayloadTooLarge
from gateway.plugin import Exchange

SMALL_BODY = 256 * 1024


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
