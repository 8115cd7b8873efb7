"""structlog set-up: one JSON (or console) line per event on standard output.

Lines are rendered once and written in blocks: info and debug lines wait up to
``FLUSH_EVERY`` seconds (or until ``FLUSH_BYTES`` are pending) so that a busy
gateway makes one write per block instead of one per request; warnings and
errors are written at once, with whatever was pending before them.

Hot paths (the access log) can skip structlog's processor chain: a format made
once by `json_line_format` and filled by `write_json_line` gives the same line
structlog would, queued on the same writer.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import attrs
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


@attrs.frozen
class _JsonSetup:
    """The structlog set-up `configure_logging` made for JSON, as `write_json_line` needs it."""

    processors: list[structlog.typing.Processor]
    renderer: structlog.typing.Processor
    wrapper_class: Any
    logger_factory: Any
    level: int
    writer: BlockWriter

    def in_force(self) -> bool:
        """Whether structlog still runs this set-up: not reconfigured, not capturing logs.

        ``structlog.testing.capture_logs`` swaps the processors in place, hence
        the look at the last one.
        """
        live = _LIVE_CONFIG
        if live is None:  # (a structlog without it: the public, slower way)
            config = structlog.get_config()
            processors, wrapper_class = config["processors"], config["wrapper_class"]
            logger_factory = config["logger_factory"]
        else:
            processors, wrapper_class = live.default_processors, live.default_wrapper_class
            logger_factory = live.logger_factory
        return (
            processors is self.processors
            and self.processors[-1] is self.renderer
            and wrapper_class is self.wrapper_class
            and logger_factory is self.logger_factory
        )


# structlog's configuration object itself, read per access line: structlog.get_config()
# builds a dict of it each time, 4.5k of the access log's 55k instructions a request
# (bench/instructions.sh default against no_access_log).  Private, hence looked up with
# care: a structlog without it is asked the public way.
_LIVE_CONFIG: Any = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
if not all(
    hasattr(_LIVE_CONFIG, name)
    for name in ("default_processors", "default_wrapper_class", "logger_factory")
):
    _LIVE_CONFIG = None


#: The JSON set-up in force; ``None`` before `configure_logging` and for the console format.
_JSON: _JsonSetup | None = None
#: The last whole second `iso_utc_now` formatted, and its text.
_SECOND: tuple[int, str] = (-1, "")


def iso_utc_now() -> str:
    """Now, as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes it.

    For example ``2026-11-26T09:58:03.548024Z`` (and ``2026-11-26T09:58:03Z``
    when the microseconds are 0, as ``datetime.isoformat`` has it).  The date
    and time of day are formatted once a second.
    """
    global _SECOND
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached_second, prefix = _SECOND
    if second != cached_second:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _SECOND = (second, prefix)
    return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"


def json_line_format(keys: Sequence[str], event: str, level: str) -> str:
    """The ``%``-format of the line structlog's JSON output writes for an event with these keys.

    One ``%s`` slot per key, in order, for its value already written as JSON
    (as ``json.dumps`` writes it), then ``event`` and ``level``, then a slot
    that `write_json_line` fills with the timestamp.  Made once, filled per
    line: a hot path (the access log) writes its line without structlog's
    processor chain or a ``json.dumps`` of a dict.
    """
    own = {"event": event, "level": level}
    if not own.keys().isdisjoint(keys) or "timestamp" in keys:
        raise ValueError("event, level and timestamp are the line's own keys")
    slots = [json.dumps(key).replace("%", "%%") + ": %s" for key in keys]
    tail = json.dumps(own)[1:-1].replace("%", "%%") + ', "timestamp": "%s"'
    return "{" + ", ".join([*slots, tail]) + "}"


def write_json_line(level: str, line_format: str, values: tuple[str, ...]) -> bool:
    """Write ``line_format`` (from `json_line_format`) filled with ``values`` and the time.

    The line is the one structlog would write for the same event, and is
    queued on the same writer, so it keeps its place among the other lines.
    ``level`` is the one in the format, one of ``debug``, ``info``,
    ``warning``, ``error``; below the configured level nothing is written.
    Returns ``False``, having written nothing, when the JSON set-up of
    `configure_logging` is not in force (console format, logs being captured,
    structlog configured otherwise): then log through structlog instead.
    """
    setup = _JSON
    if setup is None or not setup.in_force():
        return False
    if _LEVELS[level] >= setup.level:
        getattr(setup.writer, level)(line_format % (*values, iso_utc_now()))
    return True


def flush_logs() -> None:
    """Write what is queued (at shutdown, and before the process exits)."""
    if _WRITER is not None:
        _WRITER.flush()


def configure_logging(level: str = "info", fmt: str = "json", *, cache: bool = True) -> None:
    """Configure structlog for the process (idempotent; a reload may call it again).

    ``cache`` makes each logger keep its processors after first use (faster);
    tests that configure logging and restore it afterwards pass ``False``.
    """
    global _WRITER, _JSON
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

    processors: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]
    level_number = _LEVELS.get(level, logging.INFO)
    wrapper_class = structlog.make_filtering_bound_logger(level_number)
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper_class,
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    _JSON = (
        None
        if fmt == "console"
        else _JsonSetup(processors, renderer, wrapper_class, factory, level_number, writer)
    )
