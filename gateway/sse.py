"""An incremental parser for ``text/event-stream`` bodies.

Bytes arrive in arbitrary chunks; `SSEParser.feed` returns only whole events,
each with the exact bytes it came from, so an event that no plugin changes is
passed on byte for byte.
"""

from __future__ import annotations

import re

from gateway.plugin import SSEEvent

# An event ends at a blank line; lines end in CRLF, LF or a lone CR.
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_LINE_END = re.compile(r"\r\n|\r|\n")


def parse_event(block: str) -> SSEEvent | None:
    """Parse the text of one event (without its blank line); ``None`` for comments only."""
    data: list[str] = []
    event = event_id = None
    retry = None
    seen = False
    for line in _LINE_END.split(block):
        if not line or line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id":
            event_id = value
        elif field == "retry":
            # Only ASCII digits, and not absurdly many: "²".isdigit() is true.
            retry = int(value) if value.isascii() and value.isdigit() and len(value) < 10 else None
        else:
            continue
        seen = True
    if not seen:
        return None
    return SSEEvent(data="\n".join(data), event=event, id=event_id, retry=retry)


class SSEParser:
    """Splits a byte stream into server-sent events, whatever the chunking."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[SSEEvent | None, bytes]]:
        """Add bytes; return each completed event (``None`` for a comment) with its raw bytes."""
        return self._split(self._buffer + chunk if self._buffer else chunk, final=False)

    def flush(self) -> list[tuple[SSEEvent | None, bytes]]:
        """At the end of the stream: what is left, whole events parsed, a torn one as raw bytes."""
        out = self._split(self._buffer, final=True)
        if self._buffer:
            out.append((None, self._buffer))
            self._buffer = b""
        return out

    def _split(self, buffer: bytes, *, final: bool) -> list[tuple[SSEEvent | None, bytes]]:
        out: list[tuple[SSEEvent | None, bytes]] = []
        start = 0
        for match in _EVENT_END.finditer(buffer):
            end = match.end()
            # A CR at the very end may be the first half of a CRLF still to come.
            if not final and end == len(buffer) and buffer.endswith(b"\r"):
                break
            text = buffer[start : match.start()].decode("utf-8", "replace")
            out.append((parse_event(text), buffer[start:end]))
            start = end
        self._buffer = buffer[start:]
        return out
