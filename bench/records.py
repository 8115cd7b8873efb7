"""What a run is set to do (`Settings`, full or quick) and what it found (`TargetResult`)."""

from __future__ import annotations

import attrs

from bench.load import WrkResult
from bench.streams import MemoryResult, SSEResult

#: Open files a proxy needs besides two sockets per stream (listening sockets, logs,
#: idle pooled connections, the loop's own), with room to spare.
FD_MARGIN = 1000


@attrs.frozen
class Settings:
    """How long and how hard each measurement runs."""

    quick: bool
    seconds: float  # per wrk run
    warmup: float  # wrk seconds before measuring
    sse_streams: int
    sse_events: int
    memory_counts: tuple[int, ...]
    open_timeout: float  # seconds allowed to open all streams of one memory probe
    settle: float  # seconds the memory probe waits, all streams open, before reading
    #: Probe memory in a fresh process per stream count (else in the one just measured).
    fresh_memory: bool
    #: Sample each gateway with py-spy during its 50-connection run.
    profile: bool = False
    #: Throughput-only targets: rounds of turns, and wrk seconds per turn.
    rounds: int = 1
    turn_seconds: float = 1.0
    #: Latency in turns (direct, nginx, the main gateways): rounds, and wrk seconds per turn.
    latency_rounds: int = 1
    latency_seconds: float = 1.0


@attrs.define
class TargetResult:
    """Everything measured for one target (``None``: not measured)."""

    key: str
    title: str
    kind: str
    throughput_only: bool = False
    skipped: str | None = None
    error: str | None = None
    loaded: WrkResult | None = None
    cpu_us_per_request: float | None = None
    busy: float | None = None  # the target's CPU share of one core during `loaded`
    upstream_busy: float | None = None
    unloaded: WrkResult | None = None
    sse: SSEResult | None = None
    cpu_us_per_event: float | None = None
    memory: list[MemoryResult] = attrs.field(factory=list)
    profile: str | None = None  # py-spy's hottest frames (``--profile``)
    rps_median: float | None = None  # targets measured in turns: the median of the rounds
    #: Unloaded latency measured in turns with direct and nginx: medians of the rounds.
    latency_turns: WrkResult | None = None
    #: CPU µs per request over one connection (no batching), in the latency turns:
    #: the steady figure the CPU goals are judged on.
    cpu_one_connection: float | None = None
    #: Instructions per request under callgrind (`bench.instructions`; full runs only).
    instructions: int | None = None


def run_settings(quick: bool, seconds: float | None, profile: bool, nofile: int) -> Settings:
    """The settings of a full run or of ``--quick``; ``seconds`` overrides wrk's."""
    if quick:
        return Settings(
            quick=True,
            seconds=seconds or 1,
            warmup=0,
            sse_streams=5,
            sse_events=200,
            memory_counts=(200,),
            open_timeout=20.0,
            settle=0.1,
            fresh_memory=False,
            profile=profile,
            rounds=1,
            turn_seconds=1,
            latency_rounds=1,
            latency_seconds=1,
        )
    return Settings(
        quick=False,
        seconds=seconds or 8,
        warmup=2,
        sse_streams=200,
        sse_events=200,
        memory_counts=memory_counts(nofile),
        open_timeout=120.0,
        settle=0.5,
        fresh_memory=True,
        profile=profile,
        rounds=3,
        turn_seconds=3,
        latency_rounds=5,
        latency_seconds=3,
    )


def largest_stream_count(nofile: int) -> int:
    """10,000, or the most streams a proxy can hold under ``nofile`` open files."""
    return max(0, min(10_000, (nofile - FD_MARGIN) // 2 // 100 * 100))


def memory_counts(nofile: int) -> tuple[int, ...]:
    """2,000 and 10,000 streams, or fewer where the open-file limit is lower."""
    fits = largest_stream_count(nofile)
    return tuple(sorted({min(2_000, fits), fits} - {0}))
