"""Passive health of deployments: Envoy's outlier detection, and requests in flight.

`OutlierDetector` follows Envoy's consecutive-failure detector: after
``consecutive_failures`` failures in a row a deployment is ejected for
``base_ejection * n`` (``n``: how many times it has been ejected, so a
deployment that keeps failing stays out longer), at most ``max_ejection``.
When the time is up it is routed to again without any probe; a success then
resets its failure count, and ``n`` falls back by one for every ejection
period it stays healthy, as Envoy's multiplier decays.

State lives in the process: each worker learns on its own, as each Envoy does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

__all__ = ["InFlight", "OutlierDetector"]


@attrs.define
class _Health:
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    healthy_since: float = 0.0


class OutlierDetector:
    """Counts consecutive failures per deployment and ejects the ones that keep failing."""

    def __init__(
        self,
        consecutive_failures: int,
        base_ejection: float,
        max_ejection: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consecutive_failures = consecutive_failures
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.clock = clock
        self._health: dict[str, _Health] = {}

    def is_ejected(self, name: str) -> bool:
        """Whether routing should skip ``name`` now."""
        health = self._health.get(name)
        return health is not None and health.ejected_until > self.clock()

    def ejected_until(self, name: str) -> float:
        """When the ejection of ``name`` ends (on this detector's clock; 0 if never ejected)."""
        health = self._health.get(name)
        return health.ejected_until if health is not None else 0.0

    def failure(self, name: str) -> bool:
        """Record one failure of ``name``; returns whether it was ejected by it."""
        health = self._health.setdefault(name, _Health())
        now = self.clock()
        health.failures += 1
        if health.failures < self.consecutive_failures or health.ejected_until > now:
            return False
        health.ejections += 1
        health.failures = 0
        duration = min(self.base_ejection * health.ejections, self.max_ejection)
        health.ejected_until = now + duration
        health.healthy_since = health.ejected_until
        return True

    def success(self, name: str) -> None:
        """Record one success of ``name``: its run of failures is over."""
        health = self._health.get(name)
        if health is None:
            return
        health.failures = 0
        if health.ejections:
            # The multiplier decays by one per ejection period spent healthy.
            healthy_for = self.clock() - health.healthy_since
            periods = int(healthy_for // self.base_ejection)
            if periods > 0:
                health.ejections = max(0, health.ejections - periods)
                health.healthy_since += periods * self.base_ejection

    def status(self) -> dict[str, dict[str, float | int]]:
        """What the detector knows, by deployment name (for status pages)."""
        now = self.clock()
        return {
            name: {
                "consecutive_failures": h.failures,
                "ejections": h.ejections,
                "ejected_for": max(0.0, round(h.ejected_until - now, 3)),
            }
            for name, h in self._health.items()
        }


class InFlight:
    """How many requests each deployment has open in this process."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        return self._open.get(name, 0)

    def start(self, name: str) -> None:
        self._open[name] = self._open.get(name, 0) + 1

    def end(self, name: str) -> None:
        left = self._open.get(name, 0) - 1
        if left > 0:
            self._open[name] = left
        else:
            self._open.pop(name, None)
