"""What a ``ratelimit`` store is: the `LimitStore` protocol and the values it trades in.

A store decides a request in one atomic step (`LimitStore.acquire`): every rule
that applies is checked and, only if all of them admit the request, all are
charged together, so a rejected request consumes nothing.  A token quota is
charged a reservation (the tokens the request may use), admitted only if it
fits.  A second step (`LimitStore.settle`) runs when the request has ended: it
frees concurrency slots and replaces each reservation by the tokens really used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from gateway_plugins.ratelimit.rules import Rule

__all__ = ["Check", "Decision", "LimitStore", "Outcome", "StoreUnavailable", "TokenCharge"]


class StoreUnavailable(Exception):
    """The store cannot be reached; the plugin's ``fail_open`` decides what follows.

    ``retry_after`` is how long it is expected to stay so (seconds), when known.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@attrs.frozen
class Check:
    """One rule applied to one request: the rule and the counter it charges."""

    rule: Rule
    #: ``<rule name>:<subject>``; a store prefixes it and, for quotas, adds the window.
    key: str
    #: Token quotas: the tokens reserved for the request (at most the limit; may be 0).
    cost: int = 0


@attrs.frozen
class Outcome:
    """What one rule said about one request."""

    rule: Rule
    allowed: bool
    #: How many more requests (tokens, for a token quota) the rule would admit now.
    remaining: int
    #: Seconds until the counter is whole again (a rate's bucket full, a quota's window over).
    reset: float
    #: Seconds until the rule would admit the request (0 when it did).
    retry_after: float = 0.0
    #: Quotas: the calendar window charged (``d20240131``, ``m202401``).
    window: str = ""


@attrs.frozen
class TokenCharge:
    """A token quota's reservation (``check.cost``), settled with the tokens really used."""

    check: Check
    #: The window the reservation was made in (`Outcome.window`), charged whatever the time.
    window: str
    used: int


@attrs.frozen
class Decision:
    """A store's answer: whether every rule admitted the request, and what each said."""

    admitted: bool
    outcomes: tuple[Outcome, ...]


class LimitStore(Protocol):
    """Where counters live: in this process (`MemoryStore`) or in Redis (`RedisStore`)."""

    async def start(self) -> None:
        """Connect, if the store has anything to connect to."""

    async def close(self) -> None:
        """Release connections and background tasks."""

    async def acquire(self, checks: Sequence[Check], slot_id: str) -> Decision:
        """Check every rule and, if all admit, charge them all; atomically.

        Concurrency slots taken are named ``slot_id`` (unique per request).
        Raises `StoreUnavailable` when the store cannot be reached.
        """
        ...

    async def settle(
        self, slots: Sequence[Check], tokens: Sequence[TokenCharge], slot_id: str
    ) -> None:
        """Free the request's concurrency slots and settle its token reservations.

        A reservation made in a window that has ended since is forgotten with
        it.  Raises `StoreUnavailable` when the store cannot be reached.
        """
