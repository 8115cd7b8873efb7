"""The Redis ``ratelimit`` store: counters shared by every gateway on one Redis server.

Each decision is one Lua script (`plugins.ratelimit_lua`) run with ``EVALSHA``,
so it is atomic across replicas and uses the Redis server's clock.  A dead
Redis must not hang requests: sockets time out after ``timeout`` seconds and a
failed command is retried once on a fresh connection, which is also how the
client reconnects after Redis comes back.  Concurrency slots are leases: this
store renews the leases of its open requests every third of ``lease``, so the
slots of a gateway that crashed free themselves once their lease runs out.

Redis Cluster: every key of one script must live in one slot; put a hash tag in
``key_prefix`` (``"{gateway}:ratelimit:"``) to get that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.config import redact_url
from plugins.ratelimit_lua import ACQUIRE, RENEW, SETTLE
from plugins.ratelimit_store import Check, Decision, Outcome, StoreUnavailable, TokenCharge

__all__ = ["RedisStore"]

logger = structlog.get_logger("gateway")

# Slots renewed per script call, so one call never blocks Redis for long.
_RENEW_BATCH = 500


class RedisStore:
    """Counters in Redis at ``url``, under keys that start with ``prefix``."""

    def __init__(self, url: str, prefix: str, *, timeout: float, lease: float) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.lease = lease
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        # Slots of requests still open here, slot id -> their keys, for lease renewal.
        self._open: dict[str, tuple[str, ...]] = {}
        self._renewer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Make the client and check the server answers (a dead one is only logged)."""
        client = Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._client = client
        self._scripts = {
            name: client.register_script(text)
            for name, text in (("acquire", ACQUIRE), ("settle", SETTLE), ("renew", RENEW))
        }
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            logger.warning(
                "rate-limit store unavailable at start-up",
                store=redact_url(self.url),
                error=f"{type(exc).__name__}: {exc}",
            )
        self._renewer = asyncio.create_task(self._renew_forever())

    async def close(self) -> None:
        """Stop renewing leases and close the connections."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
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
        if self._client is None:
            raise StoreUnavailable("the Redis store was not started")
        try:
            return await self._scripts[script](keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

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
