"""``metrics``' plain counts: the buckets they fill, and what a fold adds to prometheus-client."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from gateway_plugins.metrics.registry import GatewayMetrics
from gateway_plugins.metrics.tally import LATENCY_BUCKETS, Timings


def test_timings_fill_the_buckets_prometheus_would_and_fold_once():
    registry = CollectorRegistry()
    family = Histogram("t_seconds", "", ("route",), registry=registry, buckets=LATENCY_BUCKETS)
    timings = Timings(family.labels("r"))
    for seconds in (0.0, 0.005, 0.0051, 0.3, 300.0, 301.0):
        timings.observe(seconds)

    def bucket(le: str) -> float | None:
        return registry.get_sample_value("t_seconds_bucket", {"route": "r", "le": le})

    assert bucket("+Inf") == 0  # nothing folded yet
    timings.fold()
    timings.fold()  # a second fold adds nothing
    # Cumulative, as Prometheus reads them: a bound counts what equals it.
    assert bucket("0.005") == 2
    assert bucket("0.01") == 3
    assert bucket("0.25") == 3
    assert bucket("0.5") == 4
    assert bucket("300.0") == 5
    assert bucket("+Inf") == 6
    assert registry.get_sample_value("t_seconds_count", {"route": "r"}) == 6
    assert registry.get_sample_value("t_seconds_sum", {"route": "r"}) == sum(
        (0.0, 0.005, 0.0051, 0.3, 300.0, 301.0)
    )


def test_counts_reach_the_series_at_the_fold_and_only_once():
    metrics = GatewayMetrics(CollectorRegistry())
    registry = metrics.registry
    tally = metrics.route_tally("api", "up")
    tally.bytes_in += 5
    tally.open_streams += 1
    assert tally.upstream is not None
    tally.upstream.prompt_tokens += 7
    metrics.count(metrics.requests, ("api", "GET", 200))
    metrics.count(metrics.requests, ("api", "GET", 200))
    metrics.count(metrics.failovers, ("up",), 3)
    assert registry.get_sample_value("gateway_requests_total", _labels(200)) is None
    for _ in range(2):
        metrics.fold()
    assert registry.get_sample_value("gateway_requests_total", _labels(200)) == 2
    assert registry.get_sample_value("gateway_credential_failovers_total", {"upstream": "up"}) == 3
    assert registry.get_sample_value("gateway_request_bytes_total", {"route": "api"}) == 5
    assert registry.get_sample_value("gateway_open_streams", {"route": "api"}) == 1
    tokens = {"route": "api", "upstream": "up", "kind": "prompt"}
    assert registry.get_sample_value("gateway_tokens_total", tokens) == 7
    tally.open_streams -= 1  # the stream ends after the fold
    metrics.fold()
    assert registry.get_sample_value("gateway_open_streams", {"route": "api"}) == 0


def _labels(status: int) -> dict[str, str]:
    return {"route": "api", "method": "GET", "status": str(status)}
