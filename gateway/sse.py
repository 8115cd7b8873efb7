"""An incremental parser for ``text/event-stream`` bodies.

Bytes arrive in arbitrary chunks; `SSEParser.feed` returns only whole events,
each with the exact bytes it came from, so an event that no plugin changes is
passed on byte for byte.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from gateway import jsonbody


@attrs.frozen
class SSEEvent:
    """One server-sent event, as the ``text/event-stream`` format defines it.

    Plugins return it unchanged to pass the upstream's bytes through untouched,
    or ``attrs.evolve(event, data=...)`` to have it serialised anew.
    """

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """The ``data`` field parsed as JSON (raises ``ValueError`` when it is not, or
        is nested too deeply to parse)."""
        return jsonbody.loads_upstream(self.data)

    def encode(self) -> bytes:
        """Serialise the event, ending with the blank line that terminates it."""
        lines = []
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.extend(f"data: {line}" for line in self.data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


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


class EventTooLarge(ValueError):
    """An event longer than the parser's ``max_event_size`` (no blank line came in time)."""


#: The default bound on one event (``server.max_event_size``).
MAX_EVENT_SIZE = 4 * 1024 * 1024


class SSEParser:
    """Splits a byte stream into server-sent events, whatever the chunking.

    Linear in its input: each byte is scanned for the end of an event once (plus
    the three before it, where a blank line may have begun), never again as later
    chunks arrive.  One event may hold at most ``max_event_size`` bytes; a longer
    one raises `EventTooLarge` as soon as it is known to be longer.
    """

    __slots__ = ("_buffer", "_scanned", "max_event_size")

    def __init__(self, max_event_size: int = MAX_EVENT_SIZE) -> None:
        # A torn event's bytes; an empty ``bytes`` (no allocation) while there is none,
        # which is most of a stream's life (56 bytes less per open stream).
        self._buffer: bytes | bytearray = b""
        self._scanned = 0  # where in the buffer the search for an event's end goes on
        self.max_event_size = max_event_size

    def feed(self, chunk: bytes) -> list[tuple[SSEEvent | None, bytes]]:
        """Add bytes; return each completed event (``None`` for a comment) with its raw bytes."""
        if not self._buffer:  # the usual case: whole events, no torn one before them
            return self._split(chunk, final=False)
        self._buffer += chunk
        return self._split(self._buffer, final=False)

    def flush(self) -> list[tuple[SSEEvent | None, bytes]]:
        """At the end of the stream: what is left, whole events parsed, a torn one as raw bytes."""
        out = self._split(self._buffer, final=True)
        if self._buffer:
            out.append((None, bytes(self._buffer)))
            self._buffer = b""
            self._scanned = 0
        return out

    def _split(
        self, buffer: bytes | bytearray, *, final: bool
    ) -> list[tuple[SSEEvent | None, bytes]]:
        out: list[tuple[SSEEvent | None, bytes]] = []
        start = 0
        # (A blank line is at most 4 bytes, "\r\n\r\n": one may have begun before.)
        for match in _EVENT_END.finditer(buffer, max(0, self._scanned - 3)):
            end = match.end()
            # A CR at the very end may be the first half of a CRLF still to come.
            if not final and end == len(buffer) and buffer.endswith(b"\r"):
                break
            if end - start > self.max_event_size:
                raise EventTooLarge(f"an event is longer than {self.max_event_size} bytes")
            raw = bytes(buffer[start:end])
            text = raw[: match.start() - start].decode("utf-8", "replace")
            out.append((parse_event(text), raw))
            start = end
        rest = len(buffer) - start
        if rest > self.max_event_size:
            raise EventTooLarge(f"an event is longer than {self.max_event_size} bytes")
        if not rest:
            self._buffer = b""
        elif buffer is self._buffer and isinstance(buffer, bytearray):
            del buffer[:start]
        else:
            self._buffer = bytearray(buffer[start:])
        self._scanned = rest
        return out
