"""Measuring one target: throughput, latency, SSE and memory, in that order.

1. JSON answers: a warm-up, then wrk with 50 connections (requests per second,
   and the target's CPU time per request from /proc), then with 1 connection
   (latency percentiles with nothing queued).
2. SSE: streams one at a time (time to first event, time per stream) and the
   target's CPU time per event.
3. Memory: for each stream count, a fresh process (``--quick``: the same one),
   warmed up, then that many streams held open at once (resident memory per
   stream, errors).

Targets measured for throughput only (each plugin alone) run all at once and
take turns instead: `Measurer.measure_in_turns`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import attrs

from bench import profile
from bench.load import WrkResult, run_wrk, write_script
from bench.procs import cpu_seconds, rss_bytes
from bench.records import Settings, TargetResult
from bench.streams import MemoryResult, SSEResult, UpstreamControl, hold_streams, sse_latency
from bench.targets import Launcher, Running, Target

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed, as the gateway does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


@attrs.frozen
class LatencyTurns:
    """One target's figures from the latency turns: wrk's medians and CPU per request."""

    wrk: WrkResult
    cpu_us_per_request: float


class Measurer:
    """Runs every measurement of a target against a started copy of it."""

    def __init__(
        self,
        launcher: Launcher,
        settings: Settings,
        wrk: str,
        workdir: Path,
        log: Any = print,
    ) -> None:
        self.launcher = launcher
        self.settings = settings
        self.wrk = wrk
        self.workdir = workdir
        self.log = log

    def measure(self, target: Target) -> TargetResult:
        result = TargetResult(target.key, target.title, target.kind, target.throughput_only)
        counts = (target.memory_counts or self.settings.memory_counts) if target.memory else ()
        fresh = self.settings.fresh_memory and not target.reuse_for_memory
        running = self.launcher.start(target)
        try:
            self.load(target, running, result)
            if target.throughput_only:
                return result
            self.stream(target, running, result)
            if not fresh:
                result.memory += [self.hold(target, running, count) for count in counts]
        finally:
            self.launcher.stop(running)
        if fresh:
            result.memory += [self.memory(target, count) for count in counts]
        return result

    def in_turns(
        self,
        targets: Sequence[Target],
        rounds: int,
        connections: int,
        turn: Callable[[Target, Running], T],
    ) -> dict[str, list[T]]:
        """Start every target, then give each a ``turn`` per round; stop them all.

        Each round starts one further along, so no target always goes first; the
        warm-up runs wrk with ``connections`` for a second.
        """
        runs: dict[str, list[T]] = {t.key: [] for t in targets}
        started: list[tuple[Target, Running]] = []
        try:
            for target in targets:
                running = self.launcher.start(target)
                started.append((target, running))
                if self.settings.warmup:
                    self.wrk_run(target, running, connections, 1)
            for number in range(rounds):
                turn_order = started[number % len(started) :] + started[: number % len(started)]
                for target, running in turn_order:
                    runs[target.key].append(turn(target, running))
                self.log(f"  round {number + 1}/{rounds} done")
        finally:
            for _, running in started:
                self.launcher.stop(running)
        return runs

    def measure_in_turns(self, targets: Sequence[Target]) -> list[TargetResult]:
        """Throughput of several targets running at once, measured in turns.

        Each round gives every target one wrk run; a target's figures are the
        medians of its rounds, so a noisy moment of a shared machine lands on
        one turn of each target rather than on all of one target's.
        """
        settings = self.settings

        def turn(target: Target, running: Running) -> tuple[WrkResult, float]:
            cpu_before = cpu_seconds(running.pid)
            done = self.wrk_run(target, running, 50, settings.turn_seconds)
            cpu = cpu_seconds(running.pid) - cpu_before
            return done, cpu * 1e6 / max(1, done.requests)

        runs = self.in_turns(targets, settings.rounds, 50, turn)
        results: list[TargetResult] = []
        for target in targets:
            done = runs[target.key]
            result = TargetResult(target.key, target.title, target.kind, throughput_only=True)
            result.loaded = WrkResult(
                connections=50,
                requests=sum(r.requests for r, _ in done),
                seconds=sum(r.seconds for r, _ in done),
                p50_us=statistics.median(r.p50_us for r, _ in done),
                p99_us=statistics.median(r.p99_us for r, _ in done),
                errors=sum(r.errors for r, _ in done),
            )
            result.rps_median = statistics.median(r.rps for r, _ in done)
            result.cpu_us_per_request = statistics.median(cpu for _, cpu in done)
            self.log(
                f"  {target.title}: {result.rps_median:,.0f} req/s, "
                f"{result.cpu_us_per_request:.0f} µs CPU/req (medians of {len(done)})"
            )
            results.append(result)
        return results

    def latency_in_turns(self, targets: Sequence[Target]) -> dict[str, LatencyTurns]:
        """Unloaded latency (1 connection) of several targets running at once, in turns.

        One 8 s run per target, one after the other, lets a noisy minute of a
        shared machine fall on one target only; here every round gives each
        target a short run, in an order that rotates, and each percentile is the
        median of the target's rounds.
        """
        seconds = self.settings.latency_seconds

        def turn(target: Target, running: Running) -> tuple[WrkResult, float]:
            cpu_before = cpu_seconds(running.pid)
            done = self.wrk_run(target, running, 1, seconds)
            cpu = cpu_seconds(running.pid) - cpu_before
            return done, cpu * 1e6 / max(1, done.requests)

        runs = self.in_turns(targets, self.settings.latency_rounds, 1, turn)
        medians = {}
        for target in targets:
            done = runs[target.key]
            medians[target.key] = LatencyTurns(
                WrkResult(
                    connections=1,
                    requests=sum(r.requests for r, _ in done),
                    seconds=sum(r.seconds for r, _ in done),
                    p50_us=statistics.median(r.p50_us for r, _ in done),
                    p99_us=statistics.median(r.p99_us for r, _ in done),
                    errors=sum(r.errors for r, _ in done),
                ),
                statistics.median(cpu for _, cpu in done),
            )
            self.log(
                f"  {target.title}: p50 {medians[target.key].wrk.p50_us:.0f} µs, "
                f"p99 {medians[target.key].wrk.p99_us:.0f} µs, "
                f"{medians[target.key].cpu_us_per_request:.0f} µs CPU/req "
                f"(medians of {len(done)})"
            )
        return medians

    def wrk_run(
        self, target: Target, running: Running, connections: int, seconds: float
    ) -> WrkResult:
        script = write_script(self.workdir, f"{target.key}-json", target.json_request)
        return run_wrk(
            self.wrk,
            running.base_url,
            target.json_request,
            script,
            connections=connections,
            seconds=seconds,
        )

    def load(self, target: Target, running: Running, result: TargetResult) -> None:
        settings = self.settings
        if settings.warmup:
            self.wrk_run(target, running, 50, settings.warmup)
        cpu_before, upstream_before = (
            cpu_seconds(running.pid),
            cpu_seconds(self.launcher.upstream_pid),
        )
        recording = None
        py_spy = profile.find_py_spy() if settings.profile and target.kind == "gateway" else None
        if py_spy:
            out = self.workdir / f"{target.key}.pyspy"
            recording = profile.start_recording(py_spy, running.pid, settings.seconds - 1, out)
        started = time.monotonic()
        result.loaded = loaded = self.wrk_run(target, running, 50, settings.seconds)
        wall = time.monotonic() - started
        if recording is not None:
            recording.wait(30)
            result.profile = profile.summarize(out)
            self.log(result.profile)
        cpu = cpu_seconds(running.pid) - cpu_before
        result.busy = cpu / wall
        result.upstream_busy = (cpu_seconds(self.launcher.upstream_pid) - upstream_before) / wall
        if loaded.requests:
            result.cpu_us_per_request = cpu * 1e6 / loaded.requests
        self.log(
            f"  json, 50 connections: {loaded.rps:,.0f} req/s, "
            f"{result.cpu_us_per_request or 0:.0f} µs CPU/req, {loaded.errors} errors"
        )
        if target.throughput_only:
            return
        result.unloaded = unloaded = self.wrk_run(target, running, 1, settings.seconds)
        self.log(
            f"  json, 1 connection: p50 {unloaded.p50_us:.0f} µs, "
            f"p99 {unloaded.p99_us:.0f} µs, {unloaded.errors} errors"
        )

    def stream(self, target: Target, running: Running, result: TargetResult) -> None:
        settings = self.settings

        async def run() -> SSEResult:
            async with aiohttp.ClientSession() as session:
                await UpstreamControl(session, self.launcher.upstream_url).mode(settings.sse_events)
            # A few streams first, so that connections and caches are warm.
            await sse_latency(running.base_url, target.sse_request, 3, settings.sse_events)
            streams = min(settings.sse_streams, target.sse_streams or settings.sse_streams)
            return await sse_latency(
                running.base_url, target.sse_request, streams, settings.sse_events
            )

        cpu_before = cpu_seconds(running.pid)
        result.sse = sse = run_async(run())
        cpu = cpu_seconds(running.pid) - cpu_before
        events = (sse.streams - sse.errors) * sse.events
        if events:
            result.cpu_us_per_event = cpu * 1e6 / events
        self.log(
            f"  sse: first event {sse.ttfe_us:.0f} µs, stream {sse.total_us:.0f} µs, "
            f"{result.cpu_us_per_event or 0:.1f} µs CPU/event, {sse.errors} errors"
        )

    def memory(self, target: Target, count: int) -> MemoryResult:
        """A fresh, warmed-up copy of the target holding ``count`` streams open."""
        running = self.launcher.start(target)
        try:
            self.wrk_run(target, running, 50, 1)
            return self.hold(target, running, count)
        finally:
            self.launcher.stop(running)

    def hold(self, target: Target, running: Running, count: int) -> MemoryResult:
        """Hold ``count`` streams open through ``running``: its memory per stream."""
        settings = self.settings

        async def run() -> MemoryResult:
            async with aiohttp.ClientSession() as session:
                control = UpstreamControl(session, self.launcher.upstream_url)
                await control.mode(settings.sse_events)
                await sse_latency(running.base_url, target.sse_request, 3, settings.sse_events)
                return await hold_streams(
                    running.base_url,
                    target.sse_request,
                    control,
                    lambda: rss_bytes(running.pid),
                    count,
                    target.open_timeout or settings.open_timeout,
                    settings.settle,
                )

        result = run_async(run())
        self.log(
            f"  memory, {count:,} streams: {result.bytes_per_stream / 1000:.1f} KB/stream, "
            f"{result.opened:,} opened, {result.errors} errors, {result.seconds:.1f}s"
        )
        for kind, times in result.error_kinds.items():
            self.log(f"    {times} x {kind}")
        return result
