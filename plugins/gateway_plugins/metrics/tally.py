"""What the hot path counts: plain numbers, folded into prometheus-client's series in batches.

A prometheus-client update takes a lock and, for a histogram, walks its buckets
in Python: counted alone with callgrind, a counter's ``inc`` costs 5.0k
instructions, a histogram's ``observe`` 8.9k, a gauge's ``inc`` and ``dec``
9.3k together, about ten of them per request, which made ``metrics`` 173k of the
default pipeline's 758k instructions per request (``bench/instructions.sh
default no_metrics``).  Here a request adds to plain attributes, dictionary
entries and bucket lists instead (a histogram's bucket found with `bisect`), and
`GatewayMetrics.fold` adds what accumulated to prometheus-client's series: before
each scrape, so that the exposition is prometheus-client's own, unchanged.
Measured after: 22k instructions per request with ``count_tokens = false``
(607k against 585k without ``metrics``), 117k with it (the token meter of
`gateway.usage`).

Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, ``gateway run --workers N``):
each worker also folds within `FOLD_DELAY` of its first unfolded count (and when
its plugins shut down), into prometheus-client's multiprocess values, so a
scrape that reaches any worker sums every worker's files as before, at most a
second behind.  Chosen over files or a shared-memory block of our own because
prometheus-client's files already have what the gateway relies on: the clean
slate at start (`gateway.workers.clear_metrics_dir`), a dead worker's live gauges
dropped (``mark_process_dead``), counters that survive their worker, and one
reader; a fold a second costs a worker a few hundred microseconds at most.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

__all__ = ["FOLD_DELAY", "LATENCY_BUCKETS", "RouteTally", "Timings", "UpstreamTally"]

#: Seconds: from a cached answer (5 ms) to a long model completion (five minutes).
LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    *(10.0, 20.0, 30.0, 60.0, 120.0, 300.0, float("inf")),
)

#: Seconds a worker's counts may wait before they reach the multiprocess files.
FOLD_DELAY = 1.0


class Timings:
    """One histogram child's observations since the last fold: a count per bucket, and the sum."""

    __slots__ = ("buckets", "child", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count ``seconds`` in the first bucket whose bound is at least that (``le``)."""
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def fold(self) -> None:
        """Add the observations to the child, and start again from none."""
        if not self.total and not any(self.buckets):
            return
        # prometheus-client has no public call that adds n observations to a bucket:
        # these are the values its own ``Histogram.observe`` adds to (0.20 to 0.26 at least;
        # the metrics tests read the buckets, sum and count back through the exposition).
        child = self.child
        child._sum.inc(self.total)
        for value, count in zip(child._buckets, self.buckets, strict=True):
            if count:
                value.inc(count)
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0


class UpstreamTally:
    """A route's counts through its upstream since the last fold."""

    __slots__ = ("completion_tokens", "latency", "prompt_tokens", "tokens_children", "ttfb")

    def __init__(
        self, latency: Histogram, ttfb: Histogram, tokens: tuple[Counter, Counter]
    ) -> None:
        self.latency = Timings(latency)
        self.ttfb = Timings(ttfb)
        self.tokens_children = tokens
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def fold(self) -> None:
        """Add the counts to prometheus-client's children, and start again from zero."""
        self.latency.fold()
        self.ttfb.fold()
        prompt, completion = self.tokens_children
        if self.prompt_tokens:
            prompt.inc(self.prompt_tokens)
            self.prompt_tokens = 0
        if self.completion_tokens:
            completion.inc(self.completion_tokens)
            self.completion_tokens = 0


class RouteTally:
    """A route's counts since the last fold, found once per request.

    ``upstream`` is ``None`` for routes that plugins answer, so that they have
    no upstream series at all rather than ones labelled with an empty name.
    ``open_streams`` is the change of the gauge since the last fold (it may be
    negative: a stream opened before the fold and ended after it).
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "children",
        "disconnects",
        "duration",
        "open_streams",
        "upstream",
    )

    def __init__(
        self,
        duration: Histogram,
        children: tuple[Gauge, Counter, Counter, Counter],
        upstream: UpstreamTally | None,
    ) -> None:
        self.duration = Timings(duration)
        #: open streams, bytes in, bytes out, disconnects: prometheus-client's children.
        self.children = children
        self.upstream = upstream
        self.open_streams = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.disconnects = 0

    def fold(self) -> None:
        """Add the counts to prometheus-client's children, and start again from zero."""
        self.duration.fold()
        if self.upstream is not None:
            self.upstream.fold()
        streams, bytes_in, bytes_out, disconnects = self.children
        if self.open_streams:
            streams.inc(self.open_streams)
            self.open_streams = 0
        if self.bytes_in:
            bytes_in.inc(self.bytes_in)
            self.bytes_in = 0
        if self.bytes_out:
            bytes_out.inc(self.bytes_out)
            self.bytes_out = 0
        if self.disconnects:
            disconnects.inc(self.disconnects)
            self.disconnects = 0
