"""structlog set-up: one JSON (or console) line per event on standard output.

Lines are rendered once and written in blocks: info and debug lines wait up to
``FLUSH_EVERY`` seconds (or until ``FLUSH_BYTES`` are pending) so that a busy
gateway makes one write per block instead of one per request; warnings and
errors are written at once, with whatever was pending before them.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FLUSH_EVERY = 0.1
FLUSH_BYTES = 64 * 1024


class BlockWriter:
    """A structlog logger that writes rendered lines to a stream in blocks."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def later(self, message: str) -> None:
        """Queue a line; it is written within ``FLUSH_EVERY`` seconds."""
        self._pending.append(message)
        self._size += len(message)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop: nothing would flush later
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_EVERY, self.flush)

    def now(self, message: str) -> None:
        """Write a line at once, after the ones already queued."""
        self._pending.append(message)
        self.flush()

    def flush(self) -> None:
        """Write every queued line."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            block = "\n".join(self._pending) + "\n"
            self._pending.clear()
            self._size = 0
            self._stream.write(block)
            self._stream.flush()

    debug = info = msg = later
    warning = warn = error = err = critical = exception = fatal = now


_WRITER: BlockWriter | None = None


def flush_logs() -> None:
    """Write what is queued (at shutdown, and before the process exits)."""
    if _WRITER is not None:
        _WRITER.flush()


def configure_logging(level: str = "info", fmt: str = "json", *, cache: bool = True) -> None:
    """Configure structlog for the process (idempotent; a reload may call it again).

    ``cache`` makes each logger keep its processors after first use (faster);
    tests that configure logging and restore it afterwards pass ``False``.
    """
    global _WRITER
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    if _WRITER is None:
        _WRITER = BlockWriter(sys.stdout)
        atexit.register(flush_logs)
    writer = _WRITER

    def factory(*_: Any) -> BlockWriter:
        return writer

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
