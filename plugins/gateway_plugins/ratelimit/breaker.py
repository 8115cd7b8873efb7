"""A circuit breaker for the ``ratelimit`` plugin's Redis store, so that a failing store fails fast.

Envoy's outlier detection is the model: one failure or timeout ejects the
store for a back-off, during which no request waits for it (``fail_open``
requests are admitted at once, ``fail_closed`` ones answered 503 at once).
A background probe tries the store when the back-off ends: its first success
closes the breaker, each failure doubles the back-off up to its maximum.
Each transition is one log line, and counted in `STORE_HEALTH`, which the
``metrics`` plugin reads when it is scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.api import get_logger

__all__ = ["STORE_HEALTH", "CircuitBreaker", "StoreHealth"]

logger = get_logger("gateway")


class StoreHealth:
    """This process's rate-limit store breakers, as the ``metrics`` plugin reads them."""

    def __init__(self) -> None:
        self._opened = 0
        self._closed = 0
        self._open: set[int] = set()

    @property
    def opened(self) -> int:
        """How many times a breaker opened (a store became unavailable)."""
        return self._opened

    @property
    def closed(self) -> int:
        """How many times a breaker closed again (a store came back)."""
        return self._closed

    @property
    def open_now(self) -> int:
        """How many breakers are open now."""
        return len(self._open)

    def _opening(self, breaker: CircuitBreaker) -> None:
        self._opened += 1
        self._open.add(id(breaker))

    def _closing(self, breaker: CircuitBreaker) -> None:
        self._open.discard(id(breaker))
        self._closed += 1

    def _forget(self, breaker: CircuitBreaker) -> None:
        self._open.discard(id(breaker))


#: Every breaker of this process reports here.
STORE_HEALTH = StoreHealth()


class CircuitBreaker:
    """Open after a failure; probed in the background; closed on the probe's first success.

    ``probe`` is an awaitable call to the store (a ``PING``) that raises when it
    fails; ``log_fields`` go on both log lines (never a secret).
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[Any]],
        *,
        backoff: float,
        max_backoff: float,
        log_fields: dict[str, Any],
    ) -> None:
        self._probe = probe
        self.backoff = backoff
        self.max_backoff = max(backoff, max_backoff)
        self._log_fields = log_fields
        self._probing: asyncio.Task[None] | None = None
        self._opened_at = 0.0
        self._next_probe_at = 0.0

    @property
    def is_open(self) -> bool:
        """Whether the store is considered down: no request should wait for it."""
        return self._probing is not None

    @property
    def retry_after(self) -> float:
        """Seconds until the next probe (what a ``Retry-After`` can promise)."""
        return max(self._next_probe_at - time.monotonic(), 0.0)

    def failed(self, error: BaseException) -> bool:
        """A call to the store failed: open, unless open already.  Returns whether it opened."""
        if self._probing is not None:
            return False
        self._opened_at = self._next_probe_at = time.monotonic()
        self._next_probe_at += self.backoff
        STORE_HEALTH._opening(self)
        logger.warning(
            "rate-limit store unavailable",
            **self._log_fields,
            error=f"{type(error).__name__}: {error}",
            probe_in=self.backoff,
        )
        self._probing = asyncio.get_running_loop().create_task(self._probe_until_back())
        return True

    async def _probe_until_back(self) -> None:
        delay = self.backoff
        while True:
            await asyncio.sleep(max(self._next_probe_at - time.monotonic(), 0.0))
            try:
                await self._probe()
            except Exception:
                delay = min(delay * 2, self.max_backoff)
                self._next_probe_at = time.monotonic() + delay
                continue
            break
        self._probing = None
        STORE_HEALTH._closing(self)
        down = round(time.monotonic() - self._opened_at, 3)
        logger.info("rate-limit store is back", **self._log_fields, down_for=down)

    async def close(self) -> None:
        """Stop probing (the store is being closed)."""
        probing, self._probing = self._probing, None
        if probing is not None:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing
            STORE_HEALTH._forget(self)
