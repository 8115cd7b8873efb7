"""Per-deployment limits: requests per minute and tokens per minute.

``rpm`` is a GCRA rate of ``rpm`` requests a minute with a burst of ``rpm``,
decided by the ``ratelimit`` family's stores (this process's memory, or Redis so
that every gateway shares it): a deployment over its rate is skipped for the
request, as LiteLLM's router skips a deployment at its limit, and a request
that finds every deployment at its limit is answered 429.

``tpm`` counts the tokens a deployment's answers used (``Exchange.usage``: the
upstream's report, else the gateway's estimate) in the current minute, in this
process, and skips the deployment once they reach ``tpm``, until the minute
ends: a single request may carry the count past the limit (its size is unknown
until it ends).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import attrs

from gateway_plugins.ratelimit.memory_store import SHARED
from gateway_plugins.ratelimit.rules import Rule
from gateway_plugins.ratelimit.store import Check, LimitStore, StoreUnavailable

from .table import Deployment

__all__ = ["DeploymentLimits"]


@attrs.define
class _Minute:
    start: float = 0.0
    tokens: int = 0


class DeploymentLimits:
    """Admits requests to deployments within their ``rpm`` and ``tpm``."""

    def __init__(
        self,
        deployments: dict[str, Deployment],
        *,
        store: str,
        redis_url: str,
        key_prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = {
            d.name: Rule(
                name="rpm",
                kind="rate",
                key="identity",
                limit=d.rpm,
                interval=60.0 / d.rpm,
                description=f"{d.rpm} requests per minute",
            )
            for d in deployments.values()
            if d.rpm is not None
        }
        self.tpm = {d.name: d.tpm for d in deployments.values() if d.tpm is not None}
        self.store_kind = (
            "redis" if store == "redis" or (store == "auto" and redis_url) else "memory"
        )
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.clock = clock
        self._minutes: dict[str, _Minute] = {}
        self._store: LimitStore | None = None

    @property
    def active(self) -> bool:
        """Whether any deployment has a limit."""
        return bool(self.rules or self.tpm)

    async def start(self) -> None:
        if not self.rules:
            return
        if self.store_kind == "memory":
            self._store = SHARED.open(self.key_prefix)
        else:
            from gateway_plugins.ratelimit.redis_store import RedisStore

            # No concurrency slots are taken, so the lease never applies.
            self._store = RedisStore(
                self.redis_url,
                self.key_prefix,
                timeout=0.5,
                lease=60.0,
                log_fields={"plugin": "routing"},
            )
        await self._store.start()

    async def close(self) -> None:
        if self._store is None:
            return
        await self._store.close()
        if self.store_kind == "memory":
            SHARED.close(self.key_prefix)
        self._store = None

    async def admit(self, deployment: Deployment, request_id: str) -> float | None:
        """``None`` when ``deployment`` may take one more request now (it is counted),
        else the seconds until it may."""
        name = deployment.name
        limit = self.tpm.get(name)
        if limit is not None:
            minute = self._minute(name)
            if minute.tokens >= limit:
                return minute.start + 60.0 - self.clock()
        rule = self.rules.get(name)
        if rule is None or self._store is None:
            return None
        try:
            decision = await self._store.acquire((Check(rule, f"rpm:{name}"),), request_id)
        except StoreUnavailable:
            return None  # fail open: a deployment limit is a courtesy to the upstream
        if decision.admitted:
            return None
        return max(outcome.retry_after for outcome in decision.outcomes)

    def used(self, deployment: Deployment, tokens: int) -> None:
        """Count the tokens one answer of ``deployment`` used against its ``tpm``."""
        if deployment.name in self.tpm and tokens > 0:
            self._minute(deployment.name).tokens += tokens

    def _minute(self, name: str) -> _Minute:
        now = self.clock()
        start = math.floor(now / 60.0) * 60.0
        minute = self._minutes.setdefault(name, _Minute(start))
        if minute.start != start:
            minute.start, minute.tokens = start, 0
        return minute
