"""The report: the markdown tables of ratios, and bench/README.md's marked section.

Absolute numbers of a shared machine drift from run to run, so every figure
is shown next to its ratio to ``direct`` and to ``nginx`` of the same run;
only the ratios are meant to be compared across runs.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from bench.goals import (
    KB,
    Figure,
    added,
    cpu_one_connection,
    cpu_per_event,
    cpu_per_request,
    first_event,
    measured,
    p50,
    p50_in_turns,
    p99,
    p99_in_turns,
    rps,
    stream_time,
)
from bench.records import Settings, TargetResult

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DASH = "-"


def num(value: float | None, digits: int = 0) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return DASH
    return f"{value / base:.2f}x"


class Tables:
    """The markdown tables of one run."""

    def __init__(self, results: Sequence[TargetResult], settings: Settings) -> None:
        self.settings = settings
        self.results = {r.key: r for r in results}
        measured_rows = [r for r in results if r.skipped is None and r.error is None]
        self.rows = [r for r in measured_rows if not r.throughput_only]
        self.alone = [r for r in measured_rows if r.throughput_only]

    def base(self, key: str, figure: Figure) -> float | None:
        r = measured(self.results, key)
        return figure(r) if r is not None else None

    def added(self, r: TargetResult, figure: Figure) -> float | None:
        return added(self.results, r.key, figure)

    def throughput(self) -> str:
        lines = [
            f"**Small JSON answers**: wrk, 50 connections, {self.settings.seconds:.0f} s. "
            "CPU µs/req: user + system time of the target's processes over requests; "
            "busy: that CPU time over the run's length (1 core = 100 %); upstream: the "
            "upstream's busy (it shares its core with wrk).",
            "",
            "| target | req/s | x direct | x nginx | CPU µs/req | CPU x nginx | busy | upstream |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.title} | {num(rps(r))} | {ratio(rps(r), self.base('direct', rps))} "
                f"| {ratio(rps(r), self.base('nginx', rps))} | {num(cpu_per_request(r))} "
                f"| {ratio(cpu_per_request(r), self.base('nginx', cpu_per_request))} "
                f"| {num((r.busy or 0) * 100)} % | {num((r.upstream_busy or 0) * 100)} % |"
            )
        return "\n".join(lines)

    def latency(self) -> str:
        lines = [
            "**Latency**: wrk, 1 connection, "
            f"{self.settings.seconds:.0f} s; added = the target's percentile minus direct's.",
            "",
            "| target | p50 µs | p50 x direct | p99 µs | added p50 µs | added p99 µs "
            "| added p50 x nginx's | added p99 x nginx's |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        nginx50, nginx99 = added(self.results, "nginx", p50), added(self.results, "nginx", p99)
        for r in self.rows:
            added50, added99 = self.added(r, p50), self.added(r, p99)
            lines.append(
                f"| {r.title} | {num(p50(r))} | {ratio(p50(r), self.base('direct', p50))} "
                f"| {num(p99(r))} | {num(added50)} | {num(added99)} "
                f"| {ratio(added50, nginx50)} | {ratio(added99, nginx99)} |"
            )
        return "\n".join(lines)

    def latency_in_turns(self) -> str:
        rows = [r for r in self.rows if r.latency_turns is not None]
        if not rows:
            return ""
        s = self.settings
        lines = [
            f"**Latency in turns**: the same, with these targets running at once and "
            f"measured in turns ({s.latency_rounds} rounds of {s.latency_seconds:.0f} s of wrk, "
            "1 connection, in an order that rotates); medians of the rounds. The issue's "
            "latency targets are judged on these, and its CPU targets on the CPU µs per "
            "request measured here (one connection: no batching, steady from run to run).",
            "",
            "| target | p50 µs | p99 µs | added p50 µs | added p99 µs "
            "| added p50 x nginx's | added p99 x nginx's | CPU µs/req | CPU x nginx |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        nginx_cpu = self.base("nginx", cpu_one_connection)
        nginx50 = added(self.results, "nginx", p50_in_turns)
        nginx99 = added(self.results, "nginx", p99_in_turns)
        for r in rows:
            added50, added99 = self.added(r, p50_in_turns), self.added(r, p99_in_turns)
            lines.append(
                f"| {r.title} | {num(p50_in_turns(r))} | {num(p99_in_turns(r))} "
                f"| {num(added50)} | {num(added99)} "
                f"| {ratio(added50, nginx50)} | {ratio(added99, nginx99)} "
                f"| {num(r.cpu_one_connection)} | {ratio(r.cpu_one_connection, nginx_cpu)} |"
            )
        return "\n".join(lines)

    def sse(self) -> str:
        s = self.settings
        lines = [
            f"**Server-sent events**: {s.sse_streams} streams of {s.sse_events} events "
            "(the peer: fewer, it is slow), one at a time (medians); added per event = "
            "(stream time - direct's) / events.",
            "",
            "| target | first event µs | added µs | added x nginx's | stream µs "
            "| added per event µs | x nginx's | CPU µs/event | CPU x nginx |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        nginx_first = added(self.results, "nginx", first_event)
        nginx_total = added(self.results, "nginx", stream_time)
        for r in self.rows:
            added_first, added_total = self.added(r, first_event), self.added(r, stream_time)
            per_event = None if added_total is None else added_total / s.sse_events
            cpu = cpu_per_event(r)
            lines.append(
                f"| {r.title} | {num(first_event(r))} | {num(added_first)} "
                f"| {ratio(added_first, nginx_first)} | {num(stream_time(r))} "
                f"| {num(per_event, 2)} | {ratio(added_total, nginx_total)} | {num(cpu, 1)} "
                f"| {ratio(cpu, self.base('nginx', cpu_per_event))} |"
            )
        return "\n".join(lines)

    def memory(self) -> str:
        counts = sorted({m.streams for r in self.rows for m in r.memory})
        header = " | ".join(f"{c:,} streams: KB/stream | x nginx | errors" for c in counts)
        lines = [
            "**Memory per open stream**: resident memory (VmRSS) of the target's processes "
            "with N streams held open, minus before, over N (1 KB = 1,000 bytes); "
            + (
                "a fresh, warmed-up process for each N (direct: the upstream itself, "
                "not restarted)."
                if self.settings.fresh_memory
                else "in the process just measured."
            ),
            "",
            f"| target | {header} |",
            "| --- |" + " ---: | ---: | ---: |" * len(counts),
        ]
        nginx = measured(self.results, "nginx")
        for r in self.rows:
            if not r.memory:
                continue
            cells = []
            for c in counts:
                found = [m for m in r.memory if m.streams == c]
                base = [
                    m.bytes_per_stream for m in (nginx.memory if nginx else []) if m.streams == c
                ]
                if found:
                    m = found[0]
                    shown = f"{m.bytes_per_stream / KB:.1f}"
                    if m.opened < m.streams:
                        shown += f" ({m.opened:,} open)"
                    times = ratio(m.bytes_per_stream, base[0] if base else None)
                    cells.append(f"{shown} | {times} | {m.errors}")
                else:
                    cells.append(f"{DASH} | {DASH} | {DASH}")
            lines.append(f"| {r.title} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plugins(self) -> str:
        s = self.settings
        lines = [
            "**In turns**: the bare config plus one plugin in the global pipeline, and the "
            "default pipeline without `access_log`, without `metrics` and with two workers, all "
            "running at once and measured "
            f"in turns ({s.rounds} rounds of {s.turn_seconds:.0f} s of wrk, 50 connections, "
            "JSON answers); medians of the rounds. Added CPU = CPU µs/req minus the bare "
            "baseline's.",
            "",
            "| target | req/s | x baseline | x nginx | CPU µs/req | added CPU µs/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        base_rps = self.base("plugin_none", rps)
        base_cpu = self.base("plugin_none", cpu_per_request)
        for r in self.alone:
            cpu = cpu_per_request(r)
            extra = (
                None
                if cpu is None or base_cpu is None or r.key == "plugin_none"
                else cpu - base_cpu
            )
            lines.append(
                f"| {r.title} | {num(rps(r))} | {ratio(rps(r), base_rps)} "
                f"| {ratio(rps(r), self.base('nginx', rps))} | {num(cpu)} | {num(extra)} |"
            )
        return "\n".join(lines)

    def not_measured(self) -> list[str]:
        return [
            f"- {r.title}: {r.skipped or 'failed: ' + (r.error or '').splitlines()[0]}"
            for r in self.results.values()
            if r.skipped is not None or r.error is not None
        ]


def render(
    tables: Tables, info: dict[str, str], command: str, goals: Sequence[str], notes: Sequence[str]
) -> str:
    """The whole markdown report."""
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"Measured {when} with `{command}` on {info['cpus']} x {info['cpu']} "
        f"(Linux {info['kernel']}, load average {info['load']} at the start); Python "
        f"{info['python']}, aiohttp {info['aiohttp']}, uvloop {info['uvloop']}, nginx "
        f"{info['nginx']}, wrk {info['wrk']}, LiteLLM {info['litellm']}.",
        "",
        *notes,
        "",
        tables.throughput(),
        "",
        tables.latency(),
        "",
        *([tables.latency_in_turns(), ""] if tables.latency_in_turns() else []),
        tables.sse(),
        "",
        tables.memory(),
        "",
        tables.plugins(),
        "",
        "**Targets of the issue** (gateway: default = the shipped config on `/v1`):",
        "",
        *[f"- {g}" for g in goals],
    ]
    skipped = tables.not_measured()
    if skipped:
        parts += ["", "**Not measured:**", "", *skipped]
    return "\n".join(parts) + "\n"


def replace_section(readme: Path, section: str) -> None:
    """Put ``section`` between the bench markers of ``readme`` (appended if missing)."""
    text = readme.read_text() if readme.exists() else ""
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)
