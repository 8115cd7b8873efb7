"""The figures read from each result, the targets of the issue, and what makes a run valid.

The targets are judged on ``gateway: default`` (the shipped config, ``/v1``)
against ``direct``, ``nginx`` and the peer of the same run.  A run is *valid*
when every configuration ran and produced numbers without an error; that is
all ``--quick`` checks, never a timing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs

from bench.records import TargetResult

Figure = Callable[[TargetResult], float | None]
DEFAULT = "gw_default"
#: The bare aiohttp pass-through proxy: what any aiohttp proxy pays on this machine.
YARDSTICK = "aiohttp_min"
KB = 1000
BIG = 10_000


def rps(r: TargetResult) -> float | None:
    if r.rps_median is not None:
        return r.rps_median
    return r.loaded.rps if r.loaded else None


def cpu_per_request(r: TargetResult) -> float | None:
    return r.cpu_us_per_request


def p50(r: TargetResult) -> float | None:
    return r.unloaded.p50_us if r.unloaded else None


def p99(r: TargetResult) -> float | None:
    return r.unloaded.p99_us if r.unloaded else None


def p50_in_turns(r: TargetResult) -> float | None:
    return r.latency_turns.p50_us if r.latency_turns else None


def p99_in_turns(r: TargetResult) -> float | None:
    return r.latency_turns.p99_us if r.latency_turns else None


def first_event(r: TargetResult) -> float | None:
    return r.sse.ttfe_us if r.sse else None


def stream_time(r: TargetResult) -> float | None:
    return r.sse.total_us if r.sse else None


def cpu_per_event(r: TargetResult) -> float | None:
    return r.cpu_us_per_event


def measured(results: Mapping[str, TargetResult], key: str) -> TargetResult | None:
    r = results.get(key)
    return r if r is not None and r.skipped is None and r.error is None else None


def added(results: Mapping[str, TargetResult], key: str, figure: Figure) -> float | None:
    """``figure`` of ``key`` minus direct's (``None`` when either is missing)."""
    r, direct = measured(results, key), measured(results, "direct")
    if r is None or direct is None or key == "direct":
        return None
    value, base = figure(r), figure(direct)
    return None if value is None or base is None else value - base


@attrs.frozen
class Goal:
    text: str
    status: str  # PASS | FAIL | N/A
    detail: str

    def line(self) -> str:
        return f"**{self.status}** {self.text}: {self.detail}"


def yardstick(results: Mapping[str, TargetResult], figure: Figure) -> str:
    """``; the aiohttp pass-through: N µs``, the same figure added by the yardstick, if measured."""
    value = added(results, YARDSTICK, figure)
    return "" if value is None else f"; the aiohttp pass-through: {value:.0f} µs"


def _goal(
    text: str,
    value: float | None,
    shown: str,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
) -> Goal:
    if value is None:
        return Goal(text, "N/A", "not measured")
    ok = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    return Goal(text, "PASS" if ok else "FAIL", shown)


def _share(a: TargetResult | None, b: TargetResult | None, figure: Figure) -> float | None:
    x, y = (figure(a) if a else None), (figure(b) if b else None)
    return x / y if x is not None and y else None


def memory_goals(default: TargetResult | None) -> list[Goal]:
    """Memory per stream at every count, and no error at the largest."""
    memory = default.memory if default else []
    worst = max((m.bytes_per_stream for m in memory), default=None)
    shown = ", ".join(f"{m.bytes_per_stream / KB:.1f} KB at {m.streams:,}" for m in memory)
    text = "10,000 concurrent streams on one worker without an error"
    biggest = max(memory, key=lambda m: m.streams, default=None)
    if biggest is None:
        streams = Goal(text, "N/A", "not measured")
    else:
        capped = biggest.streams < BIG
        status = "FAIL" if biggest.errors else ("N/A" if capped else "PASS")
        note = " (capped by the open-file limit: see the notes)" if capped else ""
        streams = Goal(text, status, f"{biggest.streams:,} streams{note}: {biggest.errors} errors")
    return [_goal("≤ 20 KB per open SSE stream", worst, shown, at_most=20 * KB), streams]


def goals(results: Mapping[str, TargetResult], events: int) -> list[Goal]:
    """Each target of the issue, judged on this run."""
    default = measured(results, DEFAULT)
    nginx, peer = measured(results, "nginx"), measured(results, "litellm")
    by_rps = _share(default, nginx, rps)
    by_cpu = _share(nginx, default, cpu_per_request)
    out = [
        _goal(
            "default pipeline ≥ 0.25x nginx's requests per second",
            by_rps,
            f"{by_rps or 0:.2f}x (by CPU time per request: {by_cpu or 0:.2f}x)",
            at_least=0.25,
        )
    ]
    latency = (("p50", p50, p50_in_turns, 200.0), ("p99", p99, p99_in_turns, 500.0))
    for name, alone, in_turns, limit in latency:
        # Judged on the figures measured in turns when there are some: they hold still.
        figure, how = in_turns, "in turns"
        if added(results, DEFAULT, figure) is None:
            figure, how = alone, "one run"
        value = added(results, DEFAULT, figure)
        out.append(
            _goal(
                f"added latency over direct, unloaded {name} ≤ {limit:.0f} µs",
                value,
                f"{value or 0:.0f} µs ({how}){yardstick(results, figure)}",
                at_most=limit,
            )
        )
    value = added(results, DEFAULT, first_event)
    out.append(
        _goal(
            "SSE: ≤ 300 µs added to the first event",
            value,
            f"{value or 0:.0f} µs{yardstick(results, first_event)}",
            at_most=300,
        )
    )
    total = added(results, DEFAULT, stream_time)
    per_event = None if total is None else total / events
    cpu = cpu_per_event(default) if default else None
    theirs = added(results, YARDSTICK, stream_time)
    out.append(
        _goal(
            "SSE: ≤ 5 µs added per further event",
            per_event,
            f"{per_event or 0:.2f} µs (CPU: {cpu or 0:.1f} µs per event)"
            + ("" if theirs is None else f"; the aiohttp pass-through: {theirs / events:.2f} µs"),
            at_most=5,
        )
    )
    out += memory_goals(default)
    out.append(access_log_goal(results, default))
    times = _share(default, peer, rps)
    out.append(
        _goal("≥ 10x the peer's (LiteLLM's) throughput", times, f"{times or 0:.1f}x", at_least=10)
    )
    out.append(peer_latency_goal(results))
    return out


def peer_latency_goal(results: Mapping[str, TargetResult]) -> Goal:
    """The gateway's added p50 over the peer's: in turns when both were, else from one run each."""
    figure, how = p50_in_turns, "in turns"
    ours, theirs = added(results, DEFAULT, figure), added(results, "litellm", figure)
    if ours is None or theirs is None:
        figure, how = p50, "one run each"
        ours, theirs = added(results, DEFAULT, figure), added(results, "litellm", figure)
    fraction = ours / theirs if ours is not None and theirs else None
    return _goal(
        "≤ 1/20 of the peer's added latency (p50)",
        fraction,
        f"{ours or 0:.0f} µs against {theirs or 0:.0f} µs ({how})",
        at_most=0.05,
    )


def access_log_goal(results: Mapping[str, TargetResult], default: TargetResult | None) -> Goal:
    """The access log's share of throughput: 1 - (with it / without it).

    Judged on instructions per request when they were counted (they repeat to
    ~0.5 %, where wall-clock throughput here swings by ±20 %), else on
    throughput in turns, else on the sequential pair; the turns figure is shown too.
    """
    with_log, without = measured(results, "turns_default"), measured(results, "turns_no_log")
    if with_log is None or without is None:
        with_log, without = default, measured(results, "gw_no_log")
    kept = _share(with_log, without, rps)
    by_throughput = None if kept is None else 1 - kept
    shown = f"{(by_throughput or 0) * 100:.1f} % of throughput"
    logless = measured(results, "gw_no_log")
    counted = _share(logless, default, lambda r: r.instructions)
    if counted is None or default is None or logless is None:
        return _goal(TEXT_ACCESS_LOG, by_throughput, shown, at_most=0.10)
    cost = 1 - counted
    detail = (
        f"{cost * 100:.1f} % by instructions per request ({default.instructions:,} with it, "
        f"{logless.instructions:,} without; {shown} in turns)"
    )
    return _goal(TEXT_ACCESS_LOG, cost, detail, at_most=0.10)


TEXT_ACCESS_LOG = "the access log costs ≤ 10 % of throughput"


def problems(results: Sequence[TargetResult], optional: frozenset[str]) -> list[str]:
    """Why the run is not valid: a configuration that did not run or produced no numbers."""
    found = []
    for r in results:
        if r.skipped is not None:
            if r.key not in optional:
                found.append(f"{r.title}: {r.skipped}")
            continue
        if r.error is not None:
            found.append(f"{r.title}: failed: {r.error.splitlines()[0]}")
            continue
        strict = r.key not in optional
        checks = {
            "no JSON throughput": not r.loaded or r.loaded.requests == 0,
            "errors under load": strict and bool(r.loaded and r.loaded.errors),
            "no CPU figure": r.cpu_us_per_request is None,
        }
        if not r.throughput_only:
            checks |= {
                "no latency": not r.unloaded or not r.unloaded.requests or not r.unloaded.p50_us,
                "errors with 1 connection": strict and bool(r.unloaded and r.unloaded.errors),
                "no SSE figures": not r.sse or not r.sse.ttfe_us,
                "SSE errors": strict and bool(r.sse and r.sse.errors),
            }
        for m in r.memory:
            checks[f"memory probe with {m.streams:,} streams had {m.errors} errors"] = (
                strict and bool(m.errors or m.opened < m.streams)
            )
        found += [f"{r.title}: {what}" for what, bad in checks.items() if bad]
    return found
