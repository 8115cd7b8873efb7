"""The ``metrics`` plugin's metric families: one registry per process, made on first use.

Every instance of the plugin (one per distinct config table, and new ones on
each hot reload) shares the families defined here, so counters continue across
routes and reloads.  Labelled children are cached per label values, so a
request costs dictionary lookups, not ``labels()`` calls.

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

import os
import threading

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

__all__ = [
    "LATENCY_BUCKETS",
    "GatewayMetrics",
    "RouteSeries",
    "UpstreamSeries",
    "gateway_metrics",
]

#: Seconds: from a cached answer (5 ms) to a long model completion (five minutes).
LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    *(10.0, 20.0, 30.0, 60.0, 120.0, 300.0, float("inf")),
)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class UpstreamSeries:
    """The children of one route through its upstream."""

    __slots__ = ("completion_tokens", "latency", "prompt_tokens", "ttfb")

    def __init__(self, metrics: GatewayMetrics, route: str, upstream: str) -> None:
        self.latency = metrics.upstream_latency.labels(route, upstream)
        self.ttfb = metrics.ttfb.labels(route, upstream)
        self.prompt_tokens = metrics.tokens.labels(route, upstream, "prompt")
        self.completion_tokens = metrics.tokens.labels(route, upstream, "completion")


class RouteSeries:
    """The children of one route, looked up once per request.

    ``upstream`` is ``None`` for routes that plugins answer, so that they have
    no upstream series at all rather than ones labelled with an empty name.
    """

    __slots__ = ("bytes_in", "bytes_out", "disconnects", "duration", "open_streams", "upstream")

    def __init__(self, metrics: GatewayMetrics, route: str, upstream: str | None) -> None:
        self.duration = metrics.duration.labels(route)
        self.open_streams = metrics.open_streams.labels(route)
        self.bytes_in = metrics.bytes_in.labels(route)
        self.bytes_out = metrics.bytes_out.labels(route)
        self.disconnects = metrics.client_disconnects.labels(route)
        self.upstream = UpstreamSeries(metrics, route, upstream) if upstream else None


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
        self._routes: dict[tuple[str, str | None], RouteSeries] = {}
        self._requests: dict[tuple[str, str, int], Counter] = {}

    def route_series(self, route: str, upstream: str | None) -> RouteSeries:
        """The children of ``route`` through ``upstream`` (``None`` for none), made once."""
        series = self._routes.get((route, upstream))
        if series is None:
            series = self._routes[route, upstream] = RouteSeries(self, route, upstream)
        return series

    def requests_child(self, route: str, method: str, status: int) -> Counter:
        """The ``gateway_requests_total`` child for these labels, made once."""
        key = (route, method, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, method, str(status))
        return child

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
        """The text format of every metric (blocking: file reads in multiprocess mode)."""
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
