"""``python -m bench``: measure every target side by side and report the ratios.

``--quick`` (for CI, under a minute) runs every configuration briefly and
only checks that each ran and produced numbers; it prints the tables and
never writes ``bench/README.md``.  The full run writes the tables into
``bench/README.md`` between its markers and the raw numbers into
``bench/results/latest.json``.  The exit status is 1 when a configuration did
not run or produced no numbers (LiteLLM may be absent), 2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import attrs

from bench import gateway_configs, goals, instructions, litellm, nginx, profile, report
from bench.load import find_wrk
from bench.machine import machine_info
from bench.measure import Measurer
from bench.procs import LOAD_CPU, PROXY_CPU, Procs, can_pin, raise_nofile_limit
from bench.records import Settings, TargetResult, run_settings
from bench.targets import (
    LATENCY_IN_TURNS,
    Launcher,
    Target,
    all_targets,
    start_redis,
    start_upstream,
)

HERE = Path(__file__).resolve().parent
OPTIONAL = frozenset({"litellm"})
#: Targets whose instructions per request are counted (when valgrind is installed),
#: and their config variants: the access log's share of the default pipeline.
INSTRUCTIONS_OF = {
    "gw_default": "default",
    "gw_no_log": "no_access_log",
    "turns_no_metrics": "no_metrics",
    "turns_with_usage": "with_usage",
    "plugin_none": "bare",
    "plugin_routing": "only:routing",
    # One worker as `--workers N` runs it, metrics shared through files: what sharing costs.
    "turns_default_w2": "default+worker",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke run for CI")
    parser.add_argument(
        "--only",
        help="comma-separated target keys (direct and nginx are always added; "
        "plugin_X and turns_X bring plugin_none, their baseline); "
        "does not write bench/README.md. Keys: " + ", ".join(t.key for t in all_targets()),
    )
    parser.add_argument("--seconds", type=float, help="seconds per wrk run")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the gateway and the aiohttp pass-through (this checkout "
        "installed into it); default: the one running the bench",
    )
    parser.add_argument("--no-readme", action="store_true", help="print, do not write README")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample each gateway with py-spy under load and print its hot spots "
        "(does not write bench/README.md)",
    )
    return parser.parse_args(argv)


def choose_targets(args: argparse.Namespace) -> list[Target]:
    targets = all_targets()
    if args.only:
        keys = {"direct", "nginx", *args.only.split(",")}
        if any(k.startswith(("plugin_", "turns_")) for k in keys):
            keys.add("plugin_none")
        unknown = keys - {t.key for t in targets}
        if unknown:
            raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")
        targets = [t for t in targets if t.key in keys]
    return targets


def skip_reason(target: Target, quick: bool, redis_url: str) -> str | None:
    if target.kind == "litellm":
        if quick:
            return "skipped in --quick mode"
        if litellm.litellm_binary() is None:
            return litellm.SKIPPED
    if target.kind == "nginx" and nginx.find_nginx() is None:
        return "skipped: nginx not installed"
    if target.variant == "keys_redis" and not redis_url:
        return "skipped: redis-server not installed"
    return None


def result_of(target: Target, skipped: str | None = None, error: str | None = None) -> TargetResult:
    """The result of a target that was skipped or failed."""
    return TargetResult(
        target.key, target.title, target.kind, target.throughput_only, skipped=skipped, error=error
    )


def run_notes(pin: bool, nofile: int, settings: Settings) -> list[str]:
    """The notes printed above the tables: how the run was set up, what the machine forced."""
    notes = [
        f"Pinned: the target under test on CPU {PROXY_CPU}; the upstream, Redis, wrk and the "
        f"SSE client on CPU {LOAD_CPU}."
        if pin
        else "Not pinned: this machine has fewer than two CPUs to pin to.",
        "Each target is one process serving on 127.0.0.1: nginx with one worker, "
        "`gateway run` (one worker, uvloop), LiteLLM with one uvicorn worker. A busy "
        "figure well under 100 % means the upstream and wrk on the other CPU were the "
        "bottleneck, not the target: CPU µs per request then compares targets better.",
        "gateway: default is the shipped `config.toml`, whose global pipeline is "
        + " > ".join(f"`{n}`" for n in gateway_configs.shipped_pipeline())
        + "; every other gateway row is that config with one change. They all raise "
        "`max_connections` to 20,000 per upstream (shipped: 10,000, which would make the "
        "10,001st concurrent stream wait for a free connection). Redis runs on the load CPU: its "
        "CPU time is not in the target's figures.",
    ]
    biggest = max(settings.memory_counts, default=0)
    if not settings.quick and biggest < 10_000:
        notes.append(
            f"The open-file limit here is {nofile:,} (hard), and a proxy holds two sockets "
            f"per stream: the 10,000-stream probe ran with {biggest:,}."
        )
    return [f"- {n}" for n in notes]


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the `finally` that stops every child


def run_all(
    targets: Sequence[Target],
    settings: Settings,
    wrk: str,
    nofile: int,
    pin: bool,
    workdir: Path,
    python: str,
) -> list[TargetResult]:
    """Start the upstream (and Redis), measure each target in turn, stop everything."""
    procs = Procs(workdir, pin)
    results: list[TargetResult] = []
    try:
        upstream_url, upstream_pid = start_upstream(procs)
        redis_binary = shutil.which("redis-server")
        redis_url = ""
        if redis_binary and any(t.variant == "keys_redis" for t in targets):
            redis_url = start_redis(procs, workdir, redis_binary)
        launcher = Launcher(
            procs, workdir, upstream_url, upstream_pid, nofile, redis_url, python=python
        )
        measurer = Measurer(launcher, settings, wrk, workdir)
        in_turns = [t for t in targets if t.throughput_only]
        alone = [t for t in targets if not t.throughput_only]
        with_latency_turns = sum(t.key in LATENCY_IN_TURNS for t in alone) > 1
        steps = len(alone) + bool(in_turns) + with_latency_turns
        step = len(alone)
        for number, target in enumerate(alone, 1):
            print(f"[{number}/{steps}] {target.title}", flush=True)
            reason = skip_reason(target, settings.quick, redis_url)
            if reason is not None:
                print(f"  {reason}", flush=True)
                results.append(result_of(target, skipped=reason))
                continue
            began = time.monotonic()
            try:
                results.append(measurer.measure(target))
                print(f"  ({time.monotonic() - began:.0f}s)", flush=True)
            except Exception as exc:
                print(f"  failed: {exc}", flush=True)
                results.append(result_of(target, error=str(exc)))
        by_key = {r.key: r for r in results}
        latency_turns = [
            t
            for t in alone
            if t.key in LATENCY_IN_TURNS and not (by_key[t.key].skipped or by_key[t.key].error)
        ]
        if with_latency_turns:
            step += 1
            print(f"[{step}/{steps}] latency of {len(latency_turns)} targets in turns", flush=True)
        if with_latency_turns and len(latency_turns) > 1 and latency_turns[0].key == "direct":
            try:
                for key, turns in measurer.latency_in_turns(latency_turns).items():
                    by_key[key].latency_turns = turns.wrk
                    by_key[key].cpu_one_connection = turns.cpu_us_per_request
            except Exception as exc:  # the figures measured alone still stand
                print(f"  failed: {exc}", flush=True)
        if in_turns:
            print(f"[{steps}/{steps}] {len(in_turns)} configs in turns", flush=True)
            try:
                results += measurer.measure_in_turns(in_turns)
            except Exception as exc:
                print(f"  failed: {exc}", flush=True)
                results += [result_of(t, error=str(exc)) for t in in_turns]
        counted = [r for r in results if r.key in INSTRUCTIONS_OF and not (r.skipped or r.error)]
        if counted and not settings.quick and instructions.available():
            print(f"instructions per request of {len(counted)} configs (callgrind)", flush=True)
            try:
                found = instructions.count([INSTRUCTIONS_OF[r.key] for r in counted], python)
                for r in counted:
                    r.instructions = found.get(INSTRUCTIONS_OF[r.key])
            except Exception as exc:  # the wall-clock figures still stand
                print(f"  failed: {exc}", flush=True)
    finally:
        procs.stop_all()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Ctrl-C too, even when started from a shell that had SIGINT ignored (``cmd &``).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    nofile = raise_nofile_limit()
    pin = can_pin()
    if pin:
        os.sched_setaffinity(0, {LOAD_CPU})  # the runner, wrk, the upstream and Redis
    if args.profile and profile.find_py_spy() is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    settings = run_settings(args.quick, args.seconds, args.profile, nofile)
    targets = choose_targets(args)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    lite = litellm.version() if litellm.litellm_binary() else None
    info = machine_info(nginx.find_nginx(), wrk, lite, args.python)
    print(f"{command}: {len(targets)} targets, load average {info['load']}", flush=True)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    try:
        results = run_all(targets, settings, wrk, nofile, pin, workdir, args.python)
    except BaseException:
        print(f"logs kept in {workdir}", flush=True)
        raise
    notes = run_notes(pin, nofile, settings)
    judged = goals.goals({r.key: r for r in results}, settings.sse_events)
    tables = report.Tables(results, settings)
    lines = [g.line() for g in judged]
    if settings.quick:
        lines = ["not judged in --quick mode (it only checks that every configuration ran)"]
    text = report.render(tables, info, command, lines, notes)
    print("\n" + text)
    problems = goals.problems(results, OPTIONAL)
    for problem in problems:
        print(f"INVALID: {problem}")
    if problems:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if not (settings.quick or args.only or args.no_readme or args.profile or problems):
        report.replace_section(HERE / "README.md", text)
        results_dir = HERE / "results"
        results_dir.mkdir(exist_ok=True)
        raw = {"info": info, "command": command, "results": [attrs.asdict(r) for r in results]}
        (results_dir / "latest.json").write_text(json.dumps(raw, indent=1))
        print(f"wrote {HERE / 'README.md'} and {results_dir / 'latest.json'}")
    print(
        f"done in {time.monotonic() - started:.0f}s: "
        + ("every configuration produced numbers" if not problems else f"{len(problems)} problems")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
