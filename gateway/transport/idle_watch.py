"""Idle deadlines checked in batches: one timer for many upstream connections.

An open stream waits for its upstream's next byte for at most the idle
timeout.  A timer of its own per waiting connection would cost about half a
kilobyte for as long as the stream is open; here the connections whose
deadlines fall within the same `TICK` share one timer, and a deadline is
noticed at most `TICK` seconds late.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

import structlog

logger = structlog.get_logger("gateway")

#: Seconds between the times a deadline can be noticed at.
TICK = 0.05


class Watched(Protocol):
    def check_idle(self) -> None:
        """Called at or after the deadline it was watched for."""


class IdleWatch:
    """Calls ``check_idle()`` on each watched item once its deadline has passed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        #: Items by the tick (a multiple of `TICK`, in loop time) they are due at.
        self._due: dict[int, set[Watched]] = {}

    def watch(self, item: Watched, deadline: float) -> int:
        """Check ``item`` at the first tick at or after ``deadline`` (loop time).

        Returns that tick, which `unwatch` needs.
        """
        tick = math.ceil(deadline / TICK)
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = set()
            self._loop.call_at(tick * TICK, self._check, tick)
        due.add(item)
        return tick

    def unwatch(self, item: Watched, tick: int) -> None:
        """Do not check ``item`` at ``tick`` after all."""
        due = self._due.get(tick)
        if due is not None:
            due.discard(item)

    def _check(self, tick: int) -> None:
        for item in self._due.pop(tick, ()):
            try:
                item.check_idle()
            except Exception:  # one failing check must not leave the others unchecked
                logger.exception("idle check failed")
