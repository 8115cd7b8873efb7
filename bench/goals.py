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


def cpu_one_connection(r: TargetResult) -> float | None:
    return r.cpu_one_connection


def memory_goal(default: TargetResult | None, nginx: TargetResult | None) -> Goal:
    """At the largest stream count: no error, and no more bytes per stream than nginx's."""
    text = "memory per stream at the largest count: 0 errors and ≤ nginx's"
    ours = max(default.memory, key=lambda m: m.streams, default=None) if default else None
    if ours is None:
        return Goal(text, "N/A", "not measured")
    theirs = next((m for m in (nginx.memory if nginx else []) if m.streams == ours.streams), None)
    shown = f"{ours.bytes_per_stream / KB:.1f} KB at {ours.streams:,} streams, {ours.errors} errors"
    if theirs is None:
        return Goal(text, "FAIL" if ours.errors else "N/A", shown + "; nginx not measured")
    shown += f"; nginx {theirs.bytes_per_stream / KB:.1f} KB"
    ok = not ours.errors and ours.bytes_per_stream <= theirs.bytes_per_stream
    return Goal(text, "PASS" if ok else "FAIL", shown)


def latency_goals(results: Mapping[str, TargetResult], events: int) -> list[Goal]:
    """Each added latency of the default pipeline at most the aiohttp pass-through's."""
    out = []
    figures = (
        ("added p50 (in turns)", p50_in_turns, p50, 1),
        ("added p99 (in turns)", p99_in_turns, p99, 1),
        ("added time to the first SSE event", first_event, first_event, 1),
        ("added time per further SSE event", stream_time, stream_time, events),
    )
    for name, in_turns, alone, per in figures:
        figure = in_turns if added(results, DEFAULT, in_turns) is not None else alone
        ours, theirs = added(results, DEFAULT, figure), added(results, YARDSTICK, figure)
        text = f"{name} ≤ the aiohttp pass-through's"
        if ours is None or theirs is None:
            out.append(Goal(text, "N/A", "not measured"))
            continue
        ours, theirs = ours / per, theirs / per
        shown = f"{ours:.{2 if per > 1 else 0}f} µs against {theirs:.{2 if per > 1 else 0}f} µs"
        out.append(Goal(text, "PASS" if ours <= theirs else "FAIL", shown))
    return out


def cpu_goals(results: Mapping[str, TargetResult]) -> list[Goal]:
    """CPU per request over one connection: ≤ 3.5x nginx's, ≤ 0.85x the pass-through's."""
    default = measured(results, DEFAULT)
    out = []
    for key, name, limit in (("nginx", "nginx's", 3.5), (YARDSTICK, "the pass-through's", 0.85)):
        base = measured(results, key)
        one = _share(default, base, cpu_one_connection)
        fifty = _share(default, base, cpu_per_request)
        out.append(
            _goal(
                f"CPU per request, one connection, ≤ {limit}x {name}",
                one,
                f"{one or 0:.2f}x (at 50 connections: {fifty or 0:.2f}x)",
                at_most=limit,
            )
        )
    return out


def goals(results: Mapping[str, TargetResult], events: int) -> list[Goal]:
    """Each target of the issue, judged on this run against the references of the same run."""
    default = measured(results, DEFAULT)
    nginx, peer = measured(results, "nginx"), measured(results, "litellm")
    out = latency_goals(results, events) + cpu_goals(results)
    out.append(memory_goal(default, nginx))
    out.append(access_log_goal(results, default))
    out.append(metrics_goal(results, default))
    out.append(usage_goal(results))
    out.append(routing_goal(results))
    out.append(redis_goal(results))
    out.append(workers_goal(results))
    times = _share(default, peer, rps)
    out.append(
        _goal("≥ 10x the peer's (LiteLLM's) throughput", times, f"{times or 0:.1f}x", at_least=10)
    )
    out.append(peer_latency_goal(results))
    return out


def metrics_goal(results: Mapping[str, TargetResult], default: TargetResult | None) -> Goal:
    """``metrics``' share of the default pipeline's instructions per request."""
    without = measured(results, "turns_no_metrics")
    share = _share(without, default, lambda r: r.instructions)
    cost = None if share is None else 1 - share
    detail = (
        "not counted"
        if cost is None or default is None or without is None
        else f"{cost * 100:.1f} % ({default.instructions:,} with it, "
        f"{without.instructions:,} without)"
    )
    return _goal("metrics ≤ 5 % of the default pipeline's instructions", cost, detail, at_most=0.05)


def usage_goal(results: Mapping[str, TargetResult]) -> Goal:
    """The usage ledger's share of the default pipeline's throughput (issue 16)."""
    with_usage = measured(results, "turns_with_usage")
    return cost_goal(
        "usage ≤ 5 % of the default pipeline's throughput",
        in_turns=(with_usage, measured(results, "turns_default")),
        counted=(with_usage, measured(results, DEFAULT)),
        at_most=0.05,
    )


def routing_goal(results: Mapping[str, TargetResult]) -> Goal:
    """Model routing's share of the bare gateway's throughput (issue 17): one deployment
    per model, nothing else in the pipeline, so the figure is the plugin's own cost."""
    pair = measured(results, "plugin_routing"), measured(results, "plugin_none")
    return cost_goal(
        "routing ≤ 3 % of throughput (bare + routing against bare)",
        in_turns=pair,
        counted=pair,
        at_most=0.03,
    )


Pair = tuple[TargetResult | None, TargetResult | None]


def cost_goal(text: str, *, in_turns: Pair, counted: Pair, at_most: float) -> Goal:
    """What a plugin takes of throughput: 1 - (without it / with it), each pair given
    as (with it, without it).

    Judged on instructions per request when the ``counted`` pair has them (they repeat
    to ~0.5 %, where wall-clock throughput here swings by ±20 %), else on requests per
    second of the ``in_turns`` pair; the throughput figure is shown either way.
    """
    kept = _share(*in_turns, rps)
    by_throughput = None if kept is None else 1 - kept
    shown = f"{(by_throughput or 0) * 100:.1f} % of throughput"
    with_it, without = counted
    share = _share(without, with_it, lambda r: r.instructions)
    if share is None or with_it is None or without is None:
        return _goal(text, by_throughput, shown, at_most=at_most)
    detail = (
        f"{(1 - share) * 100:.1f} % by instructions per request ({with_it.instructions:,} "
        f"with it, {without.instructions:,} without; {shown} in turns)"
    )
    return _goal(text, 1 - share, detail, at_most=at_most)


def redis_goal(results: Mapping[str, TargetResult]) -> Goal:
    """CPU per request of the ratelimit on Redis over the same limits in-process: in
    turns when both were measured so, else from one run each."""
    on_redis, in_process = (
        measured(results, "turns_keys_redis"),
        measured(results, "turns_keys_memory"),
    )
    how = "in turns"
    if on_redis is None or in_process is None:
        on_redis, in_process = measured(results, "gw_keys_redis"), measured(results, "gw_keys_mem")
        how = "one run each"
    more = _share(on_redis, in_process, cpu_per_request)
    return _goal(
        "ratelimit on Redis ≤ 1.10x the in-process store's CPU per request",
        more,
        f"{more or 0:.2f}x ({how})",
        at_most=1.10,
    )


def workers_goal(results: Mapping[str, TargetResult]) -> Goal:
    """Two workers against one: what the workers share (metrics files, the port, the log
    pipe) costs per request.

    Judged on instructions per request of one worker as ``--workers N`` runs it (with
    Prometheus multiprocess mode) against the one-process default, when counted: the
    wall-clock CPU per request of two unpinned workers also counts what four busy
    processes on two CPUs cost each other (1.04x and 1.36x in two runs).  That figure,
    from the same rounds, is shown either way.
    """
    two, one = measured(results, "turns_default_w2"), measured(results, "turns_default")
    cpu = _share(two, one, cpu_per_request)
    speed = _share(two, one, rps)
    busy = "" if two is None or two.busy is None else f", the workers' busy {two.busy * 100:.0f} %"
    shown = (
        f"{cpu or 0:.2f}x CPU per request, {speed or 0:.2f}x the requests per second{busy} "
        "(wrk and the upstream share the 2 CPUs)"
    )
    text = "2 workers: CPU per request ≤ 1.10x one worker's"
    default = measured(results, DEFAULT)
    counted = _share(two, default, lambda r: r.instructions)
    if counted is None or two is None or default is None:
        return _goal(text, cpu, shown, at_most=1.10)
    detail = (
        f"{counted:.2f}x by instructions per request of a worker ({two.instructions:,} "
        f"against {default.instructions:,}); in turns {shown}"
    )
    return _goal(text, counted, detail, at_most=1.10)


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
    """The access log's share of throughput, by instructions when counted (`cost_goal`);
    else in turns, else from the two configs measured one after the other."""
    in_turns = measured(results, "turns_default"), measured(results, "turns_no_log")
    logless = measured(results, "gw_no_log")
    if None in in_turns:
        in_turns = default, logless
    return cost_goal(TEXT_ACCESS_LOG, in_turns=in_turns, counted=(default, logless), at_most=0.08)


TEXT_ACCESS_LOG = "access_log ≤ 8 % of the default pipeline"


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
