"""Cheap unique ids: a random prefix drawn once per process, then a counter.

Request ids and rate-limit slot ids must be unique (across workers and
restarts too), not unpredictable: drawing random bytes per request costs a
system call (1-2 µs), where a counter costs a few hundred nanoseconds.
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count(1)


def new_id() -> str:
    """A new id: 24 hex digits, unique in this process and very likely beyond it."""
    return f"{_PREFIX}{next(_COUNTER):012x}"
