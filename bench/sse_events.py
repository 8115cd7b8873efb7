"""What one upstream event that never ends costs the SSE parser.

``python -m bench.sse_events`` feeds an event with no blank line, 8 MiB and
64 MiB of it in 16 KiB chunks (as an upstream's reads arrive), to
`gateway.sse.SSEParser` with no size bound, and prints the CPU time and the
peak memory it took.  The parser is linear: 64 MiB costs eight times 8 MiB.
(The gateway bounds an event at ``server.max_event_size``, 4 MiB by default.)
"""

from __future__ import annotations

import time
import tracemalloc

from gateway.sse import SSEParser

CHUNK = 16 * 1024


def feed(size: int) -> tuple[float, int]:
    """CPU seconds and peak bytes to parse one ``size``-byte event, chunk by chunk."""
    parser = SSEParser(max_event_size=size + 16)
    piece = b"x" * CHUNK
    tracemalloc.start()
    start = time.process_time()
    parser.feed(b"data: ")
    for _ in range(size // CHUNK):
        parser.feed(piece)
    events = parser.feed(b"\n\n")
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(events) == 1
    return seconds, peak


def main() -> None:
    print(f"{'event':>8} {'CPU ms':>8} {'peak MiB':>9}")
    for mib in (8, 64):
        seconds, peak = feed(mib * 1024 * 1024)
        print(f"{mib:>4} MiB {seconds * 1000:>8.0f} {peak / 2**20:>9.0f}")


if __name__ == "__main__":
    main()
