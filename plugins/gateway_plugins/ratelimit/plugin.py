"""The ``ratelimit`` plugin: request rates, open requests and quotas, per client or team.

Its config is `gateway_plugins.ratelimit.config`; the rules are checked and charged in
one atomic step by a store (`gateway_plugins.ratelimit.store`: this process's memory or
Redis); the answers' headers come from `gateway_plugins.ratelimit.answers`, token
reservations from `gateway_plugins.ratelimit.usage` and token counts from
`gateway.usage`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import attrs

from gateway.api import (
    Exchange,
    GatewayConfig,
    GatewayContext,
    Plugin,
    ServiceUnavailable,
    SSEEvent,
    TokenMeter,
    new_id,
)
from gateway_plugins.ratelimit.answers import limit_headers, rejection, whole_seconds
from gateway_plugins.ratelimit.breaker import STORE_HEALTH
from gateway_plugins.ratelimit.config import RateLimitConfig
from gateway_plugins.ratelimit.memory_store import SHARED
from gateway_plugins.ratelimit.rules import Rule
from gateway_plugins.ratelimit.store import (
    Check,
    Decision,
    LimitStore,
    StoreUnavailable,
    TokenCharge,
)
from gateway_plugins.ratelimit.usage import TokenBudget

__all__ = ["RateLimit"]

# This plugin's own per-request state (others read the typed fields of `Exchange`).
_ADMISSION = "ratelimit.admission"


@attrs.define
class _Admission:
    """One request's passage through the limits, kept in ``ex.state`` until it ends."""

    checks: tuple[Check, ...]
    slot_id: str
    decision: Decision | None = None
    #: The store call still running when the client went away (Redis only).
    pending: asyncio.Future[Decision] | None = None
    #: With a token quota: what the request reserved, and what it used.
    budget: TokenBudget | None = None


class RateLimit(Plugin):
    """Limits request rate, open requests and daily or monthly quotas per identity, team or IP.

    The config (``[plugins.ratelimit]``) is documented in `RateLimitConfig`.
    ``identity`` rules count per client name that the ``auth`` plugin gave;
    ``team`` rules per team (an identity without one counts alone).  With no
    identity (``auth`` in passthrough mode) both count per client address.

    A request is admitted only if every rule that applies to its route admits
    it; then all are charged together, atomically; a rejected request changes
    no counter.  Answers carry ``X-RateLimit-Limit``, ``-Remaining`` and
    ``-Reset`` (seconds) of the first rule that applies, in the config's order;
    a 429 describes and names the rule that refused, with ``Retry-After``.
    Answers given before the limits run (a 401 from ``auth``) carry none.
    Concurrency slots are freed, and token quotas settled, when the request
    ends, however it ends.  A token quota reserves the most a request may use
    before forwarding it and admits it only if that fits (see
    `gateway_plugins.ratelimit.usage`), then charges what it really used.

    It reports through the typed fields of `Exchange`: ``limited_by`` (the rule's
    name) on a 429, and ``usage`` (when no plugin set it) once a token quota settled.
    """

    name = "ratelimit"
    Config = RateLimitConfig

    def __init__(self, config: RateLimitConfig, *, store: LimitStore | None = None) -> None:
        super().__init__(config)
        self.rules = tuple(Rule.of(rule, i) for i, rule in enumerate(config.rules))
        names = [rule.name for rule in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rules: names must be unique ({', '.join(twice)} used twice)")
        if store is None:
            config.check()
        self.store_kind = config.store_kind
        self._store = store
        self._given_store = store is not None
        self._started = False
        tokens = any(rule.kind == "tokens" for rule in self.rules)
        settles = tokens or any(rule.kind == "concurrency" for rule in self.rules)
        # Plain rates and request quotas cost nothing per chunk or at the end.
        self._used = {
            "on_request": bool(self.rules),
            "on_response": bool(self.rules),
            "on_chunk": tokens,
            "on_event": tokens,
            "on_complete": settles,
        }

    def uses(self, hook: str) -> bool:
        return self._used.get(hook, False)

    def status(self) -> Mapping[str, Any]:
        """The counters' store: its kind and its circuit breakers (this process's)."""
        if not self.rules:
            return {}
        health = STORE_HEALTH
        breakers = {"opened": health.opened, "closed": health.closed, "open": health.open_now}
        return {"store": {"kind": self.store_kind, "breakers": breakers}}

    @property
    def per_process_state(self) -> str | None:
        """What ``gateway run --workers N`` must warn about: limits counted per process."""
        if not self.rules or self.store_kind != "memory":
            return None
        return (
            "ratelimit: with --workers N each worker counts the rate limits alone (in-process "
            "store) and together they admit up to N times the limits; set redis_url to share them"
        )

    @property
    def store(self) -> LimitStore:
        """The store the counters live in (once started)."""
        if self._store is None:
            raise RuntimeError("the ratelimit plugin was not started")
        return self._store

    def check(self, config: GatewayConfig) -> list[str]:
        problems = []
        for index, rule in enumerate(self.rules):
            unknown = sorted((rule.routes or frozenset()) - set(config.routes))
            if unknown:
                problems.append(f"rules[{index}].routes: unknown route(s) {', '.join(unknown)}")
        return problems

    async def startup(self, context: GatewayContext) -> None:
        if not self.rules:
            return
        if self._store is None and self.store_kind == "memory":
            self._store = SHARED.open(self.config.key_prefix)
        elif self._store is None:
            from gateway_plugins.ratelimit.redis_store import RedisStore

            config = self.config
            self._store = RedisStore(
                config.redis_url,
                config.key_prefix,
                timeout=config.redis_timeout,
                lease=config.slot_lease,
                pool_size=config.redis_pool_size,
                backoff=config.redis_backoff,
                max_backoff=config.redis_max_backoff,
                log_fields={"fail_open": config.fail_open},
            )
        await self._store.start()
        self._started = True

    async def shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.store.close()
        if not self._given_store:
            if self.store_kind == "memory":
                SHARED.close(self.config.key_prefix)
            self._store = None

    async def on_request(self, ex: Exchange) -> None:
        rules = [rule for rule in self.rules if rule.applies_to(ex)]
        if not rules:
            return
        budget = None
        if any(rule.kind == "tokens" for rule in rules):
            budget = await TokenBudget.of(ex, self.config.default_max_tokens)
        checks = tuple(
            # A reservation over the whole quota takes it all: the request then
            # runs alone, in a window nothing else has used yet.
            Check(rule, f"{rule.name}:{rule.subject(ex)}", min(budget.reserved, rule.limit))
            if budget is not None and rule.kind == "tokens"
            else Check(rule, f"{rule.name}:{rule.subject(ex)}")
            for rule in rules
        )
        admission = _Admission(checks, new_id(), budget=budget)
        ex.state[_ADMISSION] = admission
        try:
            if self.store_kind == "memory":
                decision = await self.store.acquire(checks, admission.slot_id)
            else:
                # Shielded: if the client goes away mid-call, on_complete still learns
                # whether slots were taken, and frees them.
                acquiring = self.store.acquire(checks, admission.slot_id)
                admission.pending = asyncio.ensure_future(acquiring)
                decision = await asyncio.shield(admission.pending)
        except StoreUnavailable as exc:
            # The store logged it, once per outage.
            del ex.state[_ADMISSION]
            if self.config.fail_open:
                return
            raise ServiceUnavailable(
                "the rate-limit store is unavailable; try again later",
                headers={"Retry-After": str(max(1, whole_seconds(exc.retry_after)))},
            ) from None
        if not decision.admitted:
            del ex.state[_ADMISSION]
            hit, error = rejection(decision)
            ex.limited_by = hit.rule.name
            ex.log.info(
                "rate limited", rule=hit.rule.name, retry_after=error.headers["Retry-After"]
            )
            raise error
        admission.decision = decision
        if budget is not None and self.config.stream_usage:
            budget.ask_for_usage(ex)

    async def on_response(self, ex: Exchange) -> None:
        admission: _Admission | None = ex.state.get(_ADMISSION)
        if admission is None or admission.decision is None or ex.response_headers is None:
            return
        headers = ex.response_headers
        # The first rule, in the config's order: the same one on every answer.
        headers.update(limit_headers(admission.decision.outcomes[0]))
        if admission.budget is not None:
            content = headers.get("Content-Type", ""), headers.get("Content-Encoding", "")
            admission.budget.meter = TokenMeter(*content)

    async def on_chunk(self, ex: Exchange, chunk: bytes) -> bytes:
        admission: _Admission | None = ex.state.get(_ADMISSION)
        meter = admission.budget.meter if admission and admission.budget else None
        if meter is not None:
            if chunk:
                meter.feed(chunk)
            else:
                meter.finish()
        return chunk

    async def on_event(self, ex: Exchange, event: SSEEvent) -> SSEEvent | None:
        admission: _Admission | None = ex.state.get(_ADMISSION)
        budget = admission.budget if admission is not None else None
        if budget is not None and budget.meter is not None:
            usage_chunk = budget.meter.event(event)
            if usage_chunk and budget.strip_usage:
                return None  # asked for by the gateway, not by the client
        return event

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        admission: _Admission | None = ex.state.pop(_ADMISSION, None)  # popped: settled once
        if admission is None:
            return
        decision = admission.decision
        if decision is None and admission.pending is not None:
            try:
                decision = await admission.pending
            except (StoreUnavailable, asyncio.CancelledError):
                return
        if decision is None or not decision.admitted:
            return
        slots = [c for c in admission.checks if c.rule.kind == "concurrency"]
        charges: list[TokenCharge] = []
        if admission.budget is not None:
            budget = admission.budget
            used = budget.used(ex, error)
            if ex.usage is None and budget.meter is not None and used:
                ex.usage = budget.meter.usage(budget.prompt)
            charges = [
                TokenCharge(check, outcome.window, used)
                for check, outcome in zip(admission.checks, decision.outcomes, strict=True)
                if check.rule.kind == "tokens"
            ]
        if not (slots or charges):
            return
        with contextlib.suppress(StoreUnavailable):
            # If it fails, slots free themselves when their lease ends, and
            # reservations stay charged.
            await self.store.settle(slots, charges, admission.slot_id)
