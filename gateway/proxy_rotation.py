"""Choosing an outbound proxy: rotation, and skipping the ones that failed.

A proxy that could not be reached, timed out or refused the tunnel is skipped
for a cool-down, as Envoy's outlier detection ejects a host; when every proxy
of a list is cooling down, the one that recovers first is used rather than
none (an upstream's proxy is never bypassed: see `gateway.forwarder`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

import structlog

from gateway.redaction import redact_url

logger = structlog.get_logger("gateway")

#: How long a failed proxy is skipped when no ``upstream_proxy`` config says otherwise.
DEFAULT_COOLDOWN = 30.0


class ProxyRotation:
    """The proxies' turns and health, shared by every request of a config."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._turns: dict[tuple[str, ...], itertools.count[int]] = {}
        self._down_until: dict[str, float] = {}
        #: Cool-downs per proxy, from ``upstream_proxy`` configs; else `DEFAULT_COOLDOWN`.
        self.cooldowns: dict[str, float] = {}
        self._clock = clock

    def choose(self, proxies: Sequence[str]) -> str:
        """The next healthy proxy of the list, in its own rotation; if none is healthy,
        the one that recovers first."""
        key = tuple(proxies)
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = itertools.count()
        start = next(turn)
        now = self._clock()
        for offset in range(len(proxies)):
            proxy = proxies[(start + offset) % len(proxies)]
            if self._down_until.get(proxy, 0.0) <= now:
                return proxy
        return min(proxies, key=lambda p: self._down_until.get(p, 0.0))

    def down_for(self, proxy: str) -> float:
        """Seconds until ``proxy`` is tried again after a failure (0: healthy)."""
        return max(0.0, self._down_until.get(proxy, 0.0) - self._clock())

    def failed(self, proxy: str, why: str) -> None:
        """Skip ``proxy`` for its cool-down (logged once, however many requests saw it fail)."""
        now = self._clock()
        if self._down_until.get(proxy, 0.0) > now:
            return
        cooldown = self.cooldowns.get(proxy, DEFAULT_COOLDOWN)
        self._down_until[proxy] = now + cooldown
        logger.warning(
            "proxy failed, skipping it for a while",
            proxy=redact_url(proxy),
            why=why,
            cooldown_s=cooldown,
        )
