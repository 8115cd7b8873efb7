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
from collections.abc import Mapping

import attrs
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api import HTTP_METHODS, Exchange, GatewayContext, Plugin, UpstreamError
from gateway_plugins.metrics.registry import GatewayMetrics, gateway_metrics

#: The ``Exchange.state`` key of this plugin: when the upstream's head arrived.
STATE_KEY = "metrics"
#: The most distinct ``rule`` (and ``deployment``) labels of a counter (see `Metrics._bounded`).
MAX_RULE_LABELS = 100
_CLIENT_GONE = (asyncio.CancelledError, ConnectionError)


def _check_path(_: object, __: object, value: str) -> None:
    if value and not value.startswith("/"):
        raise ValueError(f'path: must start with "/" or be empty ({value!r})')


class Metrics(Plugin):
    """Counts requests, times them and serves the numbers in Prometheus text format.

    A request adds to plain numbers; they reach prometheus-client's series at
    each scrape (and within a second in multiprocess mode): see
    `gateway_plugins.metrics.tally`.

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
        #: Count every answer's tokens (the upstream's ``usage``, else an estimate): the
        #: gateway then reads JSON and event-stream answers of the routes this runs on.
        count_tokens: bool = True

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.metrics: GatewayMetrics = gateway_metrics()
        self._rule_labels: set[str] = set()
        self._deployment_labels: set[str] = set()
        self._context: GatewayContext | None = None

    def needs_usage(self) -> bool:
        return bool(self.config.count_tokens)

    def uses(self, hook: str) -> bool:
        """``on_request`` only when this instance serves the endpoint."""
        if hook == "on_request":
            return bool(self.config.path)
        return super().uses(hook)

    async def startup(self, context: GatewayContext) -> None:
        """Make every route's series (at zero); keep the context, for the plugins' statuses."""
        self._context = context
        config = context.config
        for name, route in config.routes.items():
            self.metrics.route_tally(name, route.upstream)

    async def shutdown(self) -> None:
        """Fold the last counts (in multiprocess mode, into the files other workers read)."""
        self.metrics.fold()

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        """Answer ``GET <path>`` with the metrics; leave every other request alone."""
        if ex.path != self.config.path or ex.method != "GET":
            return None
        # The ratelimit plugin's store breakers, as its status reports them now.
        statuses = self._context.statuses() if self._context is not None else {}
        store = statuses.get("ratelimit", {}).get("store", {})
        breakers = store.get("breakers", {}) if isinstance(store, Mapping) else {}
        self.metrics.observe_ratelimit_store(
            breakers.get("opened", 0), breakers.get("closed", 0), breakers.get("open", 0)
        )
        # The usage ledger's lost rows, as its status counts them.
        dropped = statuses.get("usage", {}).get("rows_dropped", 0)
        self.metrics.observe_usage_dropped(dropped if isinstance(dropped, int) else 0)
        self.metrics.fold()
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
            self.metrics.route_tally(ex.route_name, ex.upstream.name).open_streams += 1
            ex.state[STATE_KEY] = time.perf_counter()
            self.metrics.fold_soon()

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        """Count the request, its timings, bytes, tokens and what went wrong."""
        now = time.perf_counter()
        metrics = self.metrics
        route = ex.route_name
        upstream = ex.upstream.name if ex.upstream is not None else None
        tally = metrics.route_tally(route, upstream)
        head_at: float | None = ex.state.get(STATE_KEY)
        if head_at is not None:
            tally.open_streams -= 1
        via = tally.upstream
        if via is not None:
            if head_at is not None:
                via.latency.observe(head_at - ex.started)
            if ex.first_byte_at is not None:
                via.ttfb.observe(ex.first_byte_at - ex.started)
            usage = ex.usage
            if usage is not None:
                via.prompt_tokens += max(usage.prompt_tokens, 0)
                via.completion_tokens += max(usage.completion_tokens, 0)
        gone = isinstance(error, _CLIENT_GONE)
        status = ex.status if ex.status is not None else (499 if gone else 500)
        method = ex.method if ex.method in HTTP_METHODS else "OTHER"
        metrics.count(metrics.requests, (route, method, status))
        if ex.deployment is not None:
            deployment = self._bounded(ex.deployment, self._deployment_labels)
            metrics.count(metrics.deployment_requests, (route, deployment, status))
        tally.duration.observe(now - ex.started)
        tally.bytes_in += ex.bytes_in
        tally.bytes_out += ex.bytes_out
        if gone:
            tally.disconnects += 1
        elif error is not None and upstream is not None and ex.attempts > 0:
            kind = upstream_error_kind(error)
            if kind is not None:
                metrics.count(metrics.upstream_errors, (route, upstream, kind))
        if ex.limited_by is not None:
            metrics.count(metrics.ratelimit_rejections, (route, self._rule_label(ex)))
        if ex.credential_failovers > 0 and upstream is not None:
            metrics.count(metrics.failovers, (upstream,), ex.credential_failovers)
        metrics.fold_soon()

    def _rule_label(self, ex: Exchange) -> str:
        """``ex.limited_by`` as a label: a rule's name from the config, by contract.

        SECURITY: the labels stay few even if a plugin broke that contract (a key
        as the name, say): past `MAX_RULE_LABELS` names, the rest count as ``other``.
        """
        return self._bounded(ex.limited_by or "other", self._rule_labels)

    @staticmethod
    def _bounded(name: str, seen: set[str]) -> str:
        """``name`` as a label, or ``other`` once `MAX_RULE_LABELS` names were seen."""
        if name not in seen:
            if len(seen) >= MAX_RULE_LABELS:
                return "other"
            seen.add(name)
        return name


def upstream_error_kind(error: BaseException) -> str | None:
    """The ``kind`` label of an upstream failure, ``None`` if ``error`` is not one.

    Before the response head: ``timeout``, ``proxy`` (the outbound proxy failed),
    ``connect`` (the upstream refused or could not be reached), ``failed`` (it
    broke off or answered garbage).  Once the body is flowing: ``idle_timeout``,
    ``aborted``.  Errors plugins raise are not counted.
    """
    return error.kind if isinstance(error, UpstreamError) else None
