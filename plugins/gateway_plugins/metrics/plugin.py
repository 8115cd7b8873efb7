"""``metrics``: Prometheus metrics of every request, and the ``/metrics`` endpoint.

Put it early in the global pipeline, so that it sees every request that matched
a route, and give its path a route of its own without an upstream::

    pipeline = ["access_log", "metrics", "cors", "auth", "ratelimit", "upstream_proxy"]

    [routes.metrics]
    methods = ["GET"]
    path = "/metrics"
    skip = ["auth", "upstream_proxy"]

Requests that match no route are answered 404 before any plugin runs and are
not counted.  Labels come only from config names (route, upstream, rate-limit
rule), standard methods (any other is ``OTHER``) and status codes: never from
paths, queries, headers or identities.  The families are listed in
`gateway_plugins.metrics.registry`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api import HTTP_METHODS, Exchange, GatewayConfig, GatewayContext, Plugin, UpstreamError
from gateway_plugins.metrics.registry import GatewayMetrics, gateway_metrics
from gateway_plugins.ratelimit.breaker import STORE_HEALTH

#: The ``Exchange.state`` key of this plugin: when the upstream's head arrived.
STATE_KEY = "metrics"
_CLIENT_GONE = (asyncio.CancelledError, ConnectionError)


def _check_path(_: object, __: object, value: str) -> None:
    if value and not value.startswith("/"):
        raise ValueError(f'path: must start with "/" or be empty ({value!r})')


class Metrics(Plugin):
    """Counts requests, times them and serves the numbers in Prometheus text format.

    Every instance in a process shares one registry, so counters continue
    across routes with their own config and across hot reloads.  Each worker
    of ``gateway run --workers N`` serves its own numbers (a scrape reaches
    whichever worker accepts it), unless ``PROMETHEUS_MULTIPROC_DIR`` is set:
    see `gateway_plugins.metrics.registry`.
    """

    @attrs.frozen
    class Config:
        """``[plugins.metrics]``."""

        #: Where ``GET`` is answered with the metrics; empty: this instance only counts.
        path: str = attrs.field(default="/metrics", validator=_check_path)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.metrics: GatewayMetrics = gateway_metrics()
        self._rule_names: frozenset[str] = frozenset()

    def uses(self, hook: str) -> bool:
        """``on_request`` only when this instance serves the endpoint."""
        if hook == "on_request":
            return bool(self.config.path)
        return super().uses(hook)

    async def startup(self, context: GatewayContext) -> None:
        """Learn the rate-limit rule names and make every route's series (at zero)."""
        config = context.config
        self._rule_names = frozenset(config_names(list(plugin_tables(config, "ratelimit"))))
        for name, route in config.routes.items():
            self.metrics.route_series(name, route.upstream)

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        """Answer ``GET <path>`` with the metrics; leave every other request alone."""
        if ex.path != self.config.path or ex.method != "GET":
            return None
        health = STORE_HEALTH  # the ratelimit plugin's breakers, read now
        self.metrics.observe_ratelimit_store(health.opened, health.closed, health.open_now)
        # Off the event loop: collecting may read /proc or the multiprocess files.
        body = await asyncio.to_thread(self.metrics.exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def on_response(self, ex: Exchange) -> None:
        """Note when the upstream's head arrived; its body flows to the client from now on.

        A different status means the client gets an answer of the gateway's
        instead (an error a later plugin raised, or the upstream failing after
        a retry, ``upstream_status`` then being the discarded answer's).
        """
        if ex.upstream is None or ex.upstream_status is None or ex.status != ex.upstream_status:
            return
        if STATE_KEY not in ex.state:
            self.metrics.route_series(ex.route_name, ex.upstream.name).open_streams.inc()
            ex.state[STATE_KEY] = time.perf_counter()

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        """Count the request, its timings, bytes, tokens and what went wrong."""
        now = time.perf_counter()
        metrics = self.metrics
        upstream = ex.upstream.name if ex.upstream is not None else None
        series = metrics.route_series(ex.route_name, upstream)
        head_at: float | None = ex.state.get(STATE_KEY)
        if head_at is not None:
            series.open_streams.dec()
        via = series.upstream
        if via is not None:
            if head_at is not None:
                via.latency.observe(head_at - ex.started)
            if ex.first_byte_at is not None:
                via.ttfb.observe(ex.first_byte_at - ex.started)
            if ex.usage is not None:
                via.prompt_tokens.inc(max(ex.usage.prompt_tokens, 0))
                via.completion_tokens.inc(max(ex.usage.completion_tokens, 0))
        gone = isinstance(error, _CLIENT_GONE)
        status = ex.status if ex.status is not None else (499 if gone else 500)
        method = ex.method if ex.method in HTTP_METHODS else "OTHER"
        metrics.requests_child(ex.route_name, method, status).inc()
        series.duration.observe(now - ex.started)
        if ex.bytes_in:
            series.bytes_in.inc(ex.bytes_in)
        if ex.bytes_out:
            series.bytes_out.inc(ex.bytes_out)
        if gone:
            series.disconnects.inc()
        elif error is not None and upstream is not None and ex.attempts > 0:
            kind = upstream_error_kind(error)
            if kind is not None:
                metrics.upstream_errors.labels(ex.route_name, upstream, kind).inc()
        self._count_plugin_state(ex, upstream)

    def _count_plugin_state(self, ex: Exchange, upstream: str | None) -> None:
        """Rate-limit rejections and credential failovers, as those plugins recorded them."""
        limited = ex.state.get("ratelimit")
        if isinstance(limited, Mapping) and limited.get("rejected") is not None:
            rule = limited["rejected"]
            # SECURITY: only a name from the config may become a label, never a key.
            label = rule if isinstance(rule, str) and rule in self._rule_names else "other"
            self.metrics.ratelimit_rejections.labels(ex.route_name, label).inc()
        auth = ex.state.get("auth")
        if isinstance(auth, Mapping) and upstream is not None:
            failovers = auth.get("failovers", 0)
            if isinstance(failovers, int) and not isinstance(failovers, bool) and failovers > 0:
                self.metrics.failovers.labels(upstream).inc(failovers)


def upstream_error_kind(error: BaseException) -> str | None:
    """The ``kind`` label of an upstream failure, ``None`` if ``error`` is not one.

    Before the response head: ``timeout``, ``proxy`` (the outbound proxy failed),
    ``connect`` (the upstream refused or could not be reached), ``failed`` (it
    broke off or answered garbage).  Once the body is flowing: ``idle_timeout``,
    ``aborted``.  Errors plugins raise are not counted.
    """
    return error.kind if isinstance(error, UpstreamError) else None


def plugin_tables(config: GatewayConfig, name: str) -> Iterator[Mapping[str, Any]]:
    """The config tables of plugin ``name``: the global one and every route's override."""
    if name in config.plugins:
        yield config.plugins[name]
    for route in config.routes.values():
        if name in route.plugins:
            yield route.plugins[name]


def config_names(value: object) -> Iterator[str]:
    """Every key in nested tables, and every ``name = "..."`` value: the names a config gives."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            if key == "name" and isinstance(item, str):
                yield item
            yield from config_names(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from config_names(item)
