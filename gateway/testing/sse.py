"""Writing a ``text/event-stream`` answer, one flushed event at a time, with optional delay."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

CONTENT_TYPE = "text/event-stream; charset=utf-8"


def encode_event(data: Any, event: str | None = None, *, compact: bool = True) -> bytes:
    """One event's bytes; ``data`` is sent as is when a string, else as JSON.

    ``compact`` JSON has no spaces (OpenAI's style); otherwise ``", "`` and ``": "``
    separate items (Python's default, which the ChatGPT backend sends).
    """
    separators = (",", ":") if compact else (", ", ": ")
    text = data if isinstance(data, str) else json.dumps(data, separators=separators)
    lines = [f"event: {event}"] if event is not None else []
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


class EventStream:
    """An open event-stream response; waits ``delay`` seconds before every event but the first."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, delay: float, compact: bool
    ) -> None:
        self.request = request
        self.response = response
        self.delay = delay
        self.compact = compact
        self.sent = 0

    @classmethod
    async def open(
        cls, request: web.Request, delay: float = 0.0, *, compact: bool = True
    ) -> EventStream:
        """Send the response head (200, ``text/event-stream``) and return the stream."""
        response = web.StreamResponse(
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        return cls(request, response, delay, compact)

    async def _write(self, payload: bytes) -> None:
        if self.sent and self.delay > 0:
            await asyncio.sleep(self.delay)
        await self.response.write(payload)
        self.sent += 1

    async def send(self, data: Any, event: str | None = None) -> None:
        """Send one event (``data`` a string or a JSON-serialisable value)."""
        await self._write(encode_event(data, event, compact=self.compact))

    async def comment(self, text: str) -> None:
        """Send a comment line, which clients ignore (a keep-alive)."""
        await self._write(f": {text}\n\n".encode())

    async def done(self) -> web.StreamResponse:
        """Send ``data: [DONE]``, end the body cleanly and return the response."""
        await self.send("[DONE]")
        await self.response.write_eof()
        return self.response

    async def die(self) -> web.StreamResponse:
        """Drop the connection without ending the body: the client sees a torn stream."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        return self.response
