"""What a ``ratelimit`` store is: the `LimitStore` protocol and the values it trades in.

A store decides a request in one atomic step (`LimitStore.acquire`): every rule
that applies is checked and, only if all of them admit the request, all are
charged together, so a rejected request consumes nothing.  A second step
(`LimitStore.settle`) runs when the request has ended: it frees concurrency
slots and adds the tokens the answer used to the token quotas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from plugins.ratelimit_rules import Rule

__all__ = ["Check", "Decision", "LimitStore", "Outcome", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """The store cannot be reached; the plugin's ``fail_open`` decides what follows."""


@attrs.frozen
class Check:
    """One rule applied to one request: the rule and the counter it charges."""

    rule: Rule
    #: ``<rule name>:<subject>``; a store prefixes it and, for quotas, adds the window.
    key: str


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
        self, slots: Sequence[Check], token_quotas: Sequence[Check], slot_id: str, tokens: int
    ) -> None:
        """Free the request's concurrency slots and charge ``tokens`` to its token quotas.

        Tokens go to the window current when the request ends.  Raises
        `StoreUnavailable` when the store cannot be reached.
        """
