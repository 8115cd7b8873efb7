"""The in-process ``ratelimit`` store: counters in dictionaries of this process.

Nothing is awaited between checking and charging, so each decision is atomic
under asyncio.  Limits hold per process: with ``--workers N`` or several
replicas, use the Redis store.  Plugin instances with the same ``key_prefix``
share one store (`SharedMemoryStores`), so a config reload or a route-level
override does not start the counters afresh.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import attrs

from gateway_plugins.ratelimit.rules import calendar_window
from gateway_plugins.ratelimit.store import Check, Decision, Outcome, TokenCharge

__all__ = ["MemoryStore", "SharedMemoryStores"]

# Tolerance for float rounding in rate arithmetic (intervals like 1/3 s).
_EPSILON = 1e-9
# How often (clock seconds) stale entries are dropped, so memory stays bounded.
_SWEEP_EVERY = 60.0

Charge = Callable[[], None]


@attrs.define
class _Count:
    window: str
    ends: float
    used: int
    #: Token quotas: the tokens reserved by requests still running.
    reserved: int = 0


class MemoryStore:
    """Counters in this process; ``clock`` gives epoch seconds (injectable for tests).

    - rate: GCRA.  Each key holds its theoretical arrival time (TAT); a request
      at ``now`` is admitted when ``TAT - (burst - 1) * interval <= now``, and
      then the TAT moves one interval on.  Over a span ``t`` from a full bucket
      exactly ``burst + floor(t / interval)`` requests are admitted.
    - concurrency: a count of open requests per key.
    - quotas: the count of the current calendar window per key; token quotas
      also count the tokens reserved by requests still running.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._open: dict[str, int] = {}
        self._counts: dict[str, _Count] = {}
        self._next_sweep = 0.0

    async def start(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def acquire(self, checks: Sequence[Check], slot_id: str) -> Decision:
        """Check every rule, then charge them all only if every one admits."""
        now = self._clock()
        self._sweep(now)
        looked = [self._look(check, now) for check in checks]
        admitted = all(outcome.allowed for outcome, _ in looked)
        if admitted:
            for _, charge in looked:
                if charge is not None:
                    charge()
        return Decision(admitted, tuple(outcome for outcome, _ in looked))

    async def settle(
        self, slots: Sequence[Check], tokens: Sequence[TokenCharge], slot_id: str
    ) -> None:
        """Free the slots; replace each reservation by the tokens used, in its window."""
        for check in slots:
            left = self._open.get(check.key, 0) - 1
            if left > 0:
                self._open[check.key] = left
            else:
                self._open.pop(check.key, None)
        for charge in tokens:
            count = self._counts.get(charge.check.key)
            if count is None or count.window != charge.window:
                continue  # the window has ended, and its counts with it
            count.reserved = max(count.reserved - charge.check.cost, 0)
            count.used += charge.used

    def _look(self, check: Check, now: float) -> tuple[Outcome, Charge | None]:
        rule = check.rule
        key = check.key
        if rule.kind == "rate":
            interval = rule.interval
            tolerance = (rule.limit - 1) * interval
            tat = max(self._tat.get(key, now), now)
            if tat - tolerance > now + _EPSILON:
                wait = tat - tolerance - now
                return Outcome(rule, False, 0, tat - now, wait), None
            new_tat = tat + interval
            remaining = math.floor((now + tolerance - new_tat) / interval + _EPSILON) + 1
            outcome = Outcome(rule, True, max(0, remaining), new_tat - now)
            return outcome, lambda: self._tat.__setitem__(key, new_tat)
        if rule.kind == "concurrency":
            used = self._open.get(key, 0)
            if used >= rule.limit:
                return Outcome(rule, False, 0, 0.0, 1.0), None
            return Outcome(rule, True, rule.limit - used - 1, 0.0), lambda: self._take_slot(key)
        count = self._count(check, now)
        reset = count.ends - now
        if rule.kind == "tokens":
            return self._look_tokens(check, count, reset)
        if count.used >= rule.limit:
            return Outcome(rule, False, 0, reset, reset, count.window), None
        outcome = Outcome(rule, True, rule.limit - count.used - 1, reset, 0.0, count.window)
        return outcome, lambda: self._add_request(key, count)

    def _look_tokens(
        self, check: Check, count: _Count, reset: float
    ) -> tuple[Outcome, Charge | None]:
        """Admit if the reservation fits beside what is used and reserved (a reservation
        of 0 still needs one token left); refused only by others' reservations, the
        request may try again in a second, as those settle."""
        rule, cost = check.rule, check.cost
        taken = count.used + count.reserved
        if taken + max(cost, 1) > rule.limit:
            retry = 1.0 if count.used + max(cost, 1) <= rule.limit else reset
            left = max(rule.limit - taken, 0)
            return Outcome(rule, False, left, reset, retry, count.window), None
        outcome = Outcome(rule, True, rule.limit - taken - cost, reset, 0.0, count.window)
        return outcome, lambda: self._reserve(check.key, count, cost)

    def _take_slot(self, key: str) -> None:
        self._open[key] = self._open.get(key, 0) + 1

    def _add_request(self, key: str, count: _Count) -> None:
        count.used += 1
        self._counts[key] = count

    def _reserve(self, key: str, count: _Count, tokens: int) -> None:
        count.reserved += tokens
        self._counts[key] = count

    def _count(self, check: Check, now: float) -> _Count:
        """The key's count in the window holding ``now`` (a new one when it rolled over)."""
        assert check.rule.period is not None
        window, ends = calendar_window(check.rule.period, now)
        count = self._counts.get(check.key)
        if count is None or count.window != window:
            return _Count(window, ends, 0)
        return count

    def _sweep(self, now: float) -> None:
        """Drop full buckets and ended windows: they mean the same as no entry."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_EVERY
        self._tat = {k: tat for k, tat in self._tat.items() if tat > now}
        self._counts = {k: c for k, c in self._counts.items() if c.ends > now}


class SharedMemoryStores:
    """One `MemoryStore` per key prefix, kept while any plugin instance uses it."""

    def __init__(self) -> None:
        self._stores: dict[str, tuple[MemoryStore, int]] = {}

    def open(self, prefix: str) -> MemoryStore:
        """The store of ``prefix`` (made on first use); pair each call with `close`."""
        store, users = self._stores.get(prefix, (None, 0))
        if store is None:
            store = MemoryStore()
        self._stores[prefix] = (store, users + 1)
        return store

    def close(self, prefix: str) -> None:
        """One user fewer; the store is dropped with its last user."""
        store, users = self._stores[prefix]
        if users <= 1:
            del self._stores[prefix]
        else:
            self._stores[prefix] = (store, users - 1)


#: The stores of this process, shared by every `RateLimit` instance.
SHARED = SharedMemoryStores()
