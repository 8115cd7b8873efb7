"""The Redis ``ratelimit`` store: counters shared by every gateway on one Redis server.

Each decision is one Lua script (`gateway_plugins.ratelimit.lua`) run with ``EVALSHA``,
so it is atomic across replicas and uses the Redis server's clock.  The calls
of one event-loop tick go to Redis together, in one pipeline
(`gateway_plugins.ratelimit.batch`), over a bounded pool of ``pool_size`` connections:
a burst is never refused, nor let through, because the pool is busy.

A failing Redis must not slow requests down: sockets time out after
``timeout`` seconds, and the first failure opens a circuit breaker
(`gateway_plugins.ratelimit.breaker`) under which calls fail at once, without waiting
for Redis, until a background probe finds it back.  A connection found broken
(Redis restarted) is retried once on a fresh one.

Concurrency slots are leases: this store renews the leases of its open
requests every third of ``lease``, so the slots of a gateway that crashed free
themselves once their lease runs out.

Redis Cluster: every key of one script must live in one slot; put a hash tag in
``key_prefix`` (``"{gateway}:ratelimit:"``) to get that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.api import get_logger, redact_url
from gateway_plugins.ratelimit.batch import ScriptBatcher
from gateway_plugins.ratelimit.breaker import CircuitBreaker
from gateway_plugins.ratelimit.lua import ACQUIRE, RENEW, SETTLE
from gateway_plugins.ratelimit.store import Check, Decision, Outcome, StoreUnavailable, TokenCharge

__all__ = ["RedisStore"]

logger = get_logger("gateway")

# Slots renewed per script call, so one call never blocks Redis for long.
_RENEW_BATCH = 500
_SCRIPTS = {"acquire": ACQUIRE, "settle": SETTLE, "renew": RENEW}


class RedisStore:
    """Counters in Redis at ``url``, under keys that start with ``prefix``.

    ``backoff`` and ``max_backoff`` bound the breaker's probing; ``log_fields``
    go on its log lines (the URL is shown without its password).
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout: float,
        lease: float,
        pool_size: int = 10,
        backoff: float = 0.1,
        max_backoff: float = 0.5,
        log_fields: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.lease = lease
        self.pool_size = pool_size
        self._client: Redis | None = None
        self._batcher: ScriptBatcher | None = None
        self.breaker = CircuitBreaker(
            self._ping,
            backoff=backoff,
            max_backoff=max_backoff,
            log_fields={"store": redact_url(url), **(log_fields or {})},
        )
        # Slots of requests still open here, slot id -> their keys, for lease renewal.
        self._open: dict[str, tuple[str, ...]] = {}
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Make the client and check the server answers (a dead one opens the breaker)."""
        pool = BlockingConnectionPool.from_url(
            self.url,
            # The batcher sends its pipelines over pool_size connections of its own,
            # made with these settings; this pool carries only the breaker's probe
            # and the loading of scripts, which may meet: no call waits here.
            max_connections=2,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # A connection Redis closed (a restart) is retried once on a fresh one;
            # a timeout is not: the breaker takes over.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._client = Redis.from_pool(pool)
        self._batcher = ScriptBatcher(self._client, _SCRIPTS, connections=self.pool_size)
        try:
            await self._ping()
        except (RedisError, OSError) as exc:
            self.breaker.failed(exc)
        self._renewer = asyncio.create_task(self._renew_forever())

    async def close(self) -> None:
        """Stop renewing leases and probing, and close the connections."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self.breaker.close()
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def acquire(self, checks: Sequence[Check], slot_id: str) -> Decision:
        """Run the acquire script: check every rule, charge all only if all admit."""
        args: list[str | int | float] = [slot_id, round(self.lease * 1_000_000)]
        for check in checks:
            rule = check.rule
            param: str | float = ""
            if rule.kind == "rate":
                param = repr(rule.interval * 1_000_000)
            elif rule.period is not None:
                param = rule.period
            args += [rule.kind, rule.limit, param, check.cost]
        reply = await self._run("acquire", [self.key(c) for c in checks], args)
        outcomes = []
        for i, check in enumerate(checks):
            allowed, remaining, reset_ms, retry_ms, window = reply[1 + 5 * i : 6 + 5 * i]
            outcomes.append(
                Outcome(
                    check.rule,
                    bool(int(allowed)),
                    int(remaining),
                    int(reset_ms) / 1000,
                    int(retry_ms) / 1000,
                    window.decode() if isinstance(window, bytes) else str(window),
                )
            )
        admitted = bool(int(reply[0]))
        slot_keys = tuple(self.key(c) for c in checks if c.rule.kind == "concurrency")
        if admitted and slot_keys:
            self._open[slot_id] = slot_keys
        return Decision(admitted, tuple(outcomes))

    async def settle(
        self, slots: Sequence[Check], tokens: Sequence[TokenCharge], slot_id: str
    ) -> None:
        """Run the settle script: free the slots, replace the reservations by the usage."""
        self._open.pop(slot_id, None)
        keys = [self.key(c) for c in (*slots, *(t.check for t in tokens))]
        args: list[str | int] = [slot_id, len(slots)]
        for charge in tokens:
            args += [charge.window, charge.check.cost, charge.used]
        await self._run("settle", keys, args)

    def key(self, check: Check) -> str:
        """The Redis key of a check (quotas add their window's name in Lua)."""
        # Slots get their own key so that a rule changed from rate to concurrency
        # under the same name never meets a key of the other type.
        suffix = ":slots" if check.rule.kind == "concurrency" else ""
        return f"{self.prefix}{check.key}{suffix}"

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if self._batcher is None:
            raise StoreUnavailable("the Redis store was not started")
        if self.breaker.is_open:
            raise StoreUnavailable("the Redis store is down", self.breaker.retry_after)
        batcher = self._batcher
        try:
            return await batcher.run(script, keys, args)
        except (RedisError, OSError) as exc:
            if self.breaker.failed(exc):
                batcher.reject_waiting(exc)
            raise StoreUnavailable(
                f"{type(exc).__name__}: {exc}", self.breaker.retry_after
            ) from exc

    async def _ping(self) -> None:
        if self._client is None:
            raise StoreUnavailable("the Redis store was not started")
        await self._client.ping()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew()
            except StoreUnavailable as exc:
                logger.debug("could not renew rate-limit slots", error=str(exc))

    async def renew(self) -> None:
        """Move the lease expiry of every slot this process holds."""
        pairs = [(key, slot) for slot, keys in list(self._open.items()) for key in keys]
        lease = round(self.lease * 1_000_000)
        for start in range(0, len(pairs), _RENEW_BATCH):
            batch = pairs[start : start + _RENEW_BATCH]
            await self._run("renew", [k for k, _ in batch], [lease, *(s for _, s in batch)])
