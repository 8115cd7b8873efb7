"""The ``metrics`` plugin's metric families: one registry per process, made on first use.

Every instance of the plugin (one per distinct config table, and new ones on
each hot reload) shares the families defined here, so counters continue across
routes and reloads.  Requests are counted in plain numbers first and folded into
these families in batches (`gateway_plugins.metrics.tally` says why and when).

Besides the ``gateway_*`` families the registry holds prometheus-client's
process, platform and GC collectors (``process_*``, ``python_*``): memory,
file descriptors and CPU are what an operator checks next to open streams.

With ``PROMETHEUS_MULTIPROC_DIR`` set in the environment the gateway starts
with (prometheus-client reads it when first imported), every worker of
``gateway run --workers N`` writes its values there and each scrape sums
all workers' files; the process collectors are then left out, as
prometheus-client's multiprocess mode requires.  The directory must be
emptied before the gateway starts.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Hashable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from gateway_plugins.metrics.tally import FOLD_DELAY, LATENCY_BUCKETS, RouteTally, UpstreamTally

__all__ = ["LATENCY_BUCKETS", "GatewayMetrics", "gateway_metrics"]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class GatewayMetrics:
    """The ``gateway_*`` metric families in ``registry``, with their children cached."""

    def __init__(self, registry: CollectorRegistry, multiprocess_dir: str | None = None) -> None:
        self.registry = registry
        #: Where the workers' values are, in prometheus-client's multiprocess mode.
        self.multiprocess_dir = multiprocess_dir
        r = registry
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route, method and the status the client got.",
            ("route", "method", "status"),
            registry=r,
        )
        self.duration = _histogram(
            "gateway_request_duration_seconds",
            "Time from a request's arrival to its last byte or its error.",
            ("route",),
            r,
        )
        self.upstream_latency = _histogram(
            "gateway_upstream_latency_seconds",
            "Time from a request's arrival to the upstream's response head.",
            ("route", "upstream"),
            r,
        )
        self.ttfb = _histogram(
            "gateway_time_to_first_byte_seconds",
            "Time from a request's arrival to the first body byte from the upstream.",
            ("route", "upstream"),
            r,
        )
        self.open_streams = Gauge(
            "gateway_open_streams",
            "Requests whose upstream has answered and whose body is still flowing.",
            ("route",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.bytes_in = Counter(
            "gateway_request_bytes",
            "Request body bytes received from clients and sent upstream.",
            ("route",),
            registry=r,
        )
        self.bytes_out = Counter(
            "gateway_response_bytes",
            "Response body bytes streamed from upstreams to clients.",
            ("route",),
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens used: as the upstream reported them, else estimated from the text.",
            ("route", "upstream", "kind"),
            registry=r,
        )
        self.ratelimit_rejections = Counter(
            "gateway_ratelimit_rejections",
            "Requests the ratelimit plugin refused, by route and rule.",
            ("route", "rule"),
            registry=r,
        )
        self.ratelimit_store_unavailable = Gauge(
            "gateway_ratelimit_store_unavailable",
            "Rate-limit stores (Redis) whose circuit breaker is open: no request waits for them.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ratelimit_store_transitions = Counter(
            "gateway_ratelimit_store_transitions",
            "Rate-limit store circuit breaker transitions, by the state entered: "
            "open (the store became unavailable) or closed (it came back).",
            ("state",),
            registry=r,
        )
        self._store_transitions_seen = {"open": 0, "closed": 0}
        self.usage_rows_dropped = Counter(
            "gateway_usage_rows_dropped",
            "Usage ledger rows lost: refused by the writer's full queue, or in a batch the "
            "database did not take.",
            registry=r,
        )
        self._usage_dropped_seen = 0
        self.failovers = Counter(
            "gateway_credential_failovers",
            "Requests retried on another upstream credential, by upstream.",
            ("upstream",),
            registry=r,
        )
        self.deployment_requests = Counter(
            "gateway_deployment_requests",
            "Requests by the deployment that answered (the routing plugin), route and status.",
            ("route", "deployment", "status"),
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream failures by kind: timeout, connect, proxy, failed (before the head); "
            "idle_timeout, aborted (mid-body).",
            ("route", "upstream", "kind"),
            registry=r,
        )
        self.client_disconnects = Counter(
            "gateway_client_disconnects",
            "Requests whose client went away before the answer ended.",
            ("route",),
            registry=r,
        )
        self._routes: dict[tuple[str, str | None], RouteTally] = {}
        #: Labelled counts since the last fold: ``(family, label values)`` to the amount.
        self._counts: dict[tuple[Counter, tuple[Hashable, ...]], float] = {}
        self._fold_timer: asyncio.TimerHandle | None = None

    def route_tally(self, route: str, upstream: str | None) -> RouteTally:
        """The counts of ``route`` through ``upstream`` (``None`` for none), made once.

        Making them makes the route's series, at zero, in the exposition.
        """
        tally = self._routes.get((route, upstream))
        if tally is None:
            tally = self._routes[route, upstream] = self._make_tally(route, upstream)
        return tally

    def _make_tally(self, route: str, upstream: str | None) -> RouteTally:
        via = None
        if upstream:
            via = UpstreamTally(
                self.upstream_latency.labels(route, upstream),
                self.ttfb.labels(route, upstream),
                (
                    self.tokens.labels(route, upstream, "prompt"),
                    self.tokens.labels(route, upstream, "completion"),
                ),
            )
        children = (
            self.open_streams.labels(route),
            self.bytes_in.labels(route),
            self.bytes_out.labels(route),
            self.client_disconnects.labels(route),
        )
        return RouteTally(self.duration.labels(route), children, via)

    def count(self, family: Counter, labels: tuple[Hashable, ...], amount: float = 1) -> None:
        """Add ``amount`` to ``family``'s series of ``labels`` at the next fold.

        Label values are turned into text then (a status code may be an ``int``).
        """
        key = (family, labels)
        counts = self._counts
        counts[key] = counts.get(key, 0) + amount

    def fold_soon(self) -> None:
        """In multiprocess mode, fold within `FOLD_DELAY` (other workers' scrapes read the files).

        Call it on the event loop after counting; without multiprocess mode,
        each scrape folds and this does nothing.
        """
        if self._fold_timer is None and self.multiprocess_dir is not None:
            self._fold_timer = asyncio.get_running_loop().call_later(FOLD_DELAY, self._timed_fold)

    def _timed_fold(self) -> None:
        self._fold_timer = None
        self.fold()

    def fold(self) -> None:
        """Add every count since the last fold to prometheus-client's series.

        Call it where the counting happens (the event loop's thread): the
        counts are plain numbers, with no lock.
        """
        for tally in self._routes.values():
            tally.fold()
        counts, self._counts = self._counts, {}
        for (family, labels), amount in counts.items():
            family.labels(*labels).inc(amount)

    def observe_ratelimit_store(self, opened: int, closed: int, unavailable: int) -> None:
        """Bring the rate-limit store series up to the breakers' counts (read at scrape time)."""
        self.ratelimit_store_unavailable.set(unavailable)
        for state, count in (("open", opened), ("closed", closed)):
            seen = self._store_transitions_seen[state]
            if count > seen:
                self.ratelimit_store_transitions.labels(state).inc(count - seen)
                self._store_transitions_seen[state] = count

    def observe_usage_dropped(self, dropped: int) -> None:
        """Bring the ledger's dropped rows up to the ``usage`` plugin's count (at scrape time)."""
        if dropped > self._usage_dropped_seen:
            self.usage_rows_dropped.inc(dropped - self._usage_dropped_seen)
        # A new ledger (another store after a reload) counts from 0 again.
        self._usage_dropped_seen = dropped

    def exposition(self) -> bytes:
        """The text format of every metric as last folded (blocking: it may read files).

        Safe in another thread: it reads prometheus-client's series, not the counts.
        """
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def _histogram(name: str, doc: str, labels: tuple[str, ...], r: CollectorRegistry) -> Histogram:
    return Histogram(name, doc, labels, registry=r, buckets=LATENCY_BUCKETS)


_metrics: GatewayMetrics | None = None
_lock = threading.Lock()


def gateway_metrics() -> GatewayMetrics:
    """This process's metrics, made on the first call and shared by every plugin instance."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                multiprocess_dir = os.environ.get(_MULTIPROC_ENV) or None
                registry = CollectorRegistry(auto_describe=True)
                if multiprocess_dir is None:
                    ProcessCollector(registry=registry)
                    PlatformCollector(registry=registry)
                    GCCollector(registry=registry)
                _metrics = GatewayMetrics(registry, multiprocess_dir)
    return _metrics
