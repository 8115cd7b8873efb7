"""The ``[plugins.ratelimit]`` table and its ``[[plugins.ratelimit.rules]]``, as TOML gives them.

`RateLimitConfig.check` refuses what cannot work before the gateway starts; each
rule is checked by `plugins.ratelimit_rules.Rule.of`.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Literal

import attrs
from yarl import URL

from gateway.api import (
    NonNegativeInt,
    PositiveInt,
    PositiveSeconds,
    Range,
    Seconds,
    redact_url,
)

__all__ = ["KeyKind", "Period", "RateLimitConfig", "RuleConfig"]

KeyKind = Literal["identity", "team", "client_ip"]
Period = Literal["day", "month"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


@attrs.frozen
class RuleConfig:
    """One ``[[plugins.ratelimit.rules]]`` table; set exactly one of the four kinds."""

    #: Shown in the 429 message, logs and metrics, and part of the store's keys.
    name: str
    #: Whose counter: ``identity`` (the client the ``auth`` plugin named; with no
    #: identity, the client address), ``team`` (the identity's team; with none, the
    #: identity) or ``client_ip`` (through the trusted ``X-Forwarded-For`` hops).
    key: KeyKind = "identity"
    #: GCRA request rate, ``"<count>/<unit>"``: ``"60/m"``, ``"10/s"``, ``"100/30s"``.
    rate: str | None = None
    #: With ``rate``: how many requests may arrive at once (the bucket size); default 1.
    burst: PositiveInt | None = None
    #: Open requests (streams included) at once.
    concurrency: PositiveInt | None = None
    #: Requests per ``period``.
    requests: PositiveInt | None = None
    #: Tokens (prompt plus completion) per ``period``: the upstream's ``usage``, else
    #: estimated from the streamed text (see `gateway.usage`).
    tokens: PositiveInt | None = None
    #: With ``requests`` or ``tokens``: the calendar window, UTC.
    period: Period | None = None
    #: The routes the rule applies to (by name); leave it out for every route.
    routes: tuple[str, ...] | None = None


@attrs.frozen
class RateLimitConfig:
    """``[plugins.ratelimit]``: where counters live, what to do without them, the rules.

    ::

        [plugins.ratelimit]
        store = "auto"              # auto (redis when redis_url is set) | memory | redis
        redis_url = "${REDIS_URL:-}"
        fail_open = true            # Redis unavailable: admit (logged) or answer 503
        key_prefix = "gateway:ratelimit:"

        [[plugins.ratelimit.rules]]
        name = "per-key-rate"       # in the 429 message, logs and metrics: never a secret
        key = "identity"            # identity | team | client_ip
        rate = "60/m"               # GCRA: <count>/<s|m|h|d, or a duration like 30s>
        burst = 10                  # requests that may arrive at once (default 1)

        [[plugins.ratelimit.rules]]
        name = "streams"
        key = "identity"
        concurrency = 4             # open requests (streams) at once

        [[plugins.ratelimit.rules]]
        name = "daily-tokens"
        key = "team"
        tokens = 1_000_000          # or requests = N
        period = "day"              # day | month: UTC calendar windows
        routes = ["create_conversation", "openai"]   # optional: only these routes

    With ``key = "identity"`` or ``"team"`` and no identity on the request
    (``auth`` in passthrough mode), the rule counts per client address; a team
    rule on an identity with no team counts that identity alone.  So that the
    identity is known, put ``ratelimit`` after ``auth`` in the pipeline.
    """

    #: ``memory`` (this process only), ``redis`` (shared by every gateway using it),
    #: or ``auto``: redis when ``redis_url`` is set, else memory.
    store: Literal["auto", "memory", "redis"] = "auto"
    #: ``redis://[:password@]host:port/db``, ``rediss://…`` or ``unix://…``.
    redis_url: str = ""
    #: While Redis is unavailable: admit requests without limits (a warning is
    #: logged once per outage), or answer 503 with ``Retry-After`` at once.
    fail_open: bool = True
    #: Put before every Redis key (and separates in-process stores).
    key_prefix: str = "gateway:ratelimit:"
    #: Redis connect and socket timeout: the longest a request waits for a Redis
    #: that stopped answering, once; the circuit breaker then opens.
    redis_timeout: PositiveSeconds = Seconds(0.5)
    #: Redis connections this process sends decisions over at most, each carrying
    #: the decisions of many requests at once (see `gateway_plugins.ratelimit.batch`);
    #: two more serve the health probe and the loading of scripts.
    redis_pool_size: Annotated[int, Range(1, 1000)] = 10
    #: Redis unavailable: how long no request waits for it before it is probed
    #: again, doubling while it stays down, up to ``redis_max_backoff``.  The
    #: maximum bounds how soon limits apply again once Redis is back.
    redis_backoff: PositiveSeconds = Seconds(0.1)
    redis_max_backoff: PositiveSeconds = Seconds(0.5)
    #: Redis: how long a concurrency slot outlives a gateway that crashed holding
    #: it (open requests renew theirs every third of it).
    slot_lease: PositiveSeconds = Seconds(60.0)
    #: Token quotas: the completion tokens reserved for a request that sets no
    #: ``max_tokens`` (``max_completion_tokens``, ``max_output_tokens``).
    default_max_tokens: NonNegativeInt = 1024
    #: Token quotas: ask OpenAI completion streams for their usage
    #: (``stream_options.include_usage``) and hide that chunk from clients that did
    #: not ask; without it a stream is charged an estimate from its text.
    stream_usage: bool = True
    #: The limits, each a `RuleConfig` table.
    rules: tuple[RuleConfig, ...] = ()

    @property
    def store_kind(self) -> Literal["memory", "redis"]:
        """The store ``store`` chooses, ``auto`` resolved."""
        if self.store == "auto":
            return "redis" if self.redis_url else "memory"
        return self.store

    def check(self) -> None:
        """Raise `ValueError` on settings that cannot work (rules aside)."""
        if self.redis_max_backoff < self.redis_backoff:
            raise ValueError("redis_max_backoff: must not be below redis_backoff")
        if self.store_kind != "redis":
            return
        if not self.redis_url:
            raise ValueError('store = "redis" needs redis_url (e.g. "redis://127.0.0.1:6379/0")')
        try:
            scheme = URL(self.redis_url).scheme
        except ValueError:
            scheme = ""
        if scheme not in _REDIS_SCHEMES:
            shown = redact_url(self.redis_url)
            raise ValueError(f'redis_url: not a redis://, rediss:// or unix:// URL ("{shown}")')
        if importlib.util.find_spec("redis") is None:
            raise ValueError(
                "the Redis store needs the redis package: pip install 'chatgpt-gateway[redis]'"
            )
