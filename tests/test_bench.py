"""``python -m bench --quick`` runs every configuration and produces numbers.

It checks that the suite works, never how fast anything is: timings are for
``python -m bench`` on a quiet machine, read as ratios (see bench/README.md).
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from bench.goals import access_log_goal, cpu_goals, goals, memory_goal, peer_latency_goal
from bench.load import WrkResult
from bench.machine import interpreter_versions
from bench.records import TargetResult
from bench.streams import MemoryResult
from bench.targets import LATENCY_IN_TURNS, all_targets

ROOT = Path(__file__).resolve().parents[1]
MISSING = [tool for tool in ("wrk", "nginx", "redis-server") if shutil.which(tool) is None]
NUMBER = r"\d[\d,.]*"


@pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}")
def test_quick_mode_measures_every_configuration() -> None:
    readme = ROOT / "bench" / "README.md"
    before = readme.read_text() if readme.exists() else None

    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = done.stdout
    assert done.returncode == 0, output[-4000:] + done.stderr[-2000:]
    assert "every configuration produced numbers" in output
    assert "INVALID" not in output
    for target in all_targets():
        rows = re.findall(rf"^\| {re.escape(target.title)} \| {NUMBER} \|", output, re.MULTILINE)
        if target.kind == "litellm":
            assert not rows  # the peer is skipped in quick mode, and said so
            assert "LiteLLM proxy (peer): skipped in --quick mode" in output
            continue
        # Throughput, latency and SSE tables, plus the memory table when it is probed,
        # plus the latency-in-turns table for its targets; a plugin alone (and their
        # baseline) in the plugin table only.
        in_turns = target.key in LATENCY_IN_TURNS
        expected = 1 if target.throughput_only else 3 + target.memory + in_turns
        assert len(rows) == expected, target.title
    # Quick mode prints the table; only the full run rewrites bench/README.md.
    assert (readme.read_text() if readme.exists() else None) == before


def result(key: str, rps: float, instructions: int | None = None) -> TargetResult:
    return TargetResult(
        key, key, "gateway", rps_median=rps, throughput_only=True, instructions=instructions
    )


def test_the_access_log_is_judged_on_instructions_when_they_were_counted() -> None:
    turns = {
        "turns_default": result("turns_default", 800),
        "turns_no_log": result("turns_no_log", 1000),
    }
    default, logless = result("gw_default", 900, 600_000), result("gw_no_log", 1000, 560_000)
    counted = access_log_goal({**turns, "gw_no_log": logless}, default)
    assert counted.status == "PASS"  # 1 - 560/600 = 6.7 %, though 20 % in turns
    assert counted.detail.startswith("6.7 % by instructions per request (600,000 with it")
    assert "20.0 % of throughput in turns" in counted.detail
    default.instructions = logless.instructions = None
    by_turns = access_log_goal({**turns, "gw_no_log": logless}, default)
    assert (by_turns.status, by_turns.detail) == ("FAIL", "20.0 % of throughput")
    alone = access_log_goal({"gw_no_log": logless}, result("gw_default", 950))
    assert (alone.status, alone.detail) == ("PASS", "5.0 % of throughput")
    alone = access_log_goal({"gw_no_log": logless}, result("gw_default", 910))
    assert (alone.status, alone.detail) == ("FAIL", "9.0 % of throughput")


def test_each_added_latency_is_judged_against_the_aiohttp_pass_through() -> None:
    def unloaded(key: str, p50: float, turns: float | None = None) -> TargetResult:
        r = TargetResult(key, key, "x", unloaded=WrkResult(1, 100, 1.0, p50, 2 * p50, 0))
        if turns is not None:
            r.latency_turns = WrkResult(1, 100, 1.0, turns, 2 * turns, 0)
        return r

    runs = {k: unloaded(k, p50) for k, p50 in [("direct", 100), ("gw_default", 800)]}
    alone = [g.line() for g in goals(runs, 200)]
    assert "**N/A** added p50 (in turns) ≤ the aiohttp pass-through's: not measured" in alone
    runs["aiohttp_min"] = unloaded("aiohttp_min", 700)
    beside = [g.line() for g in goals(runs, 200)]
    # Measured alone only: judged on that, 700 µs against 600 µs.
    assert "**FAIL** added p50 (in turns) ≤ the aiohttp pass-through's: 700 µs against 600 µs" in (
        beside
    )
    runs = {
        "direct": unloaded("direct", 100, 100),
        "gw_default": unloaded("gw_default", 800, 600),
        "aiohttp_min": unloaded("aiohttp_min", 600, 650),
    }
    in_turns = [g.line() for g in goals(runs, 200)]
    assert "**PASS** added p50 (in turns) ≤ the aiohttp pass-through's: 500 µs against 550 µs" in (
        in_turns
    )


def test_cpu_per_request_is_judged_over_one_connection_and_shown_at_fifty() -> None:
    def cpu(key: str, one: float, fifty: float) -> TargetResult:
        return TargetResult(key, key, "x", cpu_us_per_request=fifty, cpu_one_connection=one)

    runs = {
        "nginx": cpu("nginx", 40, 30),
        "aiohttp_min": cpu("aiohttp_min", 200, 150),
        "gw_default": cpu("gw_default", 160, 150),
    }
    by_nginx, by_passthrough = (g.line() for g in cpu_goals(runs))
    assert by_nginx == (
        "**FAIL** CPU per request, one connection, ≤ 3.5x nginx's: 4.00x (at 50 connections: 5.00x)"
    )
    assert by_passthrough == (
        "**PASS** CPU per request, one connection, ≤ 0.85x the pass-through's: "
        "0.80x (at 50 connections: 1.00x)"
    )


def test_memory_per_stream_is_judged_against_nginx_at_the_largest_count() -> None:
    def probed(key: str, *figures: tuple[int, float, int]) -> TargetResult:
        memory = [MemoryResult(n, n, e, 0, int(kb * 1000 * n), 1.0) for n, kb, e in figures]
        return TargetResult(key, key, "x", memory=memory)

    nginx = probed("nginx", (2000, 19.0, 0), (9000, 18.0, 0))
    ours = probed("gw_default", (2000, 30.0, 0), (9000, 17.5, 0))
    assert memory_goal(ours, nginx).status == "PASS"  # 2,000 streams are not judged
    ours = probed("gw_default", (9000, 17.5, 3))
    assert memory_goal(ours, nginx).status == "FAIL"
    ours = probed("gw_default", (9000, 18.2, 0))
    assert memory_goal(ours, nginx).line() == (
        "**FAIL** memory per stream at the largest count: 0 errors and ≤ nginx's: "
        "18.2 KB at 9,000 streams, 0 errors; nginx 18.0 KB"
    )


def test_plugin_costs_and_two_workers_are_judged_in_the_same_run() -> None:
    def row(key: str, *, cpu: float = 0, rps: float = 0, ins: int | None = None) -> TargetResult:
        return TargetResult(key, key, "x", cpu_us_per_request=cpu, rps_median=rps, instructions=ins)

    runs = {
        "gw_default": row("gw_default", ins=600_000),
        "turns_no_metrics": row("turns_no_metrics", ins=580_000),
        "gw_keys_mem": row("gw_keys_mem", cpu=100),
        "gw_keys_redis": row("gw_keys_redis", cpu=115),
        "turns_default": row("turns_default", cpu=100, rps=1000),
        "turns_default_w2": row("turns_default_w2", cpu=105, rps=1500),
        "turns_with_usage": row("turns_with_usage", rps=970),
    }
    lines = [g.line() for g in goals(runs, 200)]
    assert "**PASS** usage ≤ 5 % of the default pipeline's throughput: 3.0 % of throughput" in lines
    assert (
        "**PASS** metrics ≤ 5 % of the default pipeline's instructions: "
        "3.3 % (600,000 with it, 580,000 without)"
    ) in lines
    assert (
        "**FAIL** ratelimit on Redis ≤ 1.10x the in-process store's CPU per request: "
        "1.15x (one run each)"
    ) in lines
    # Measured in turns too: the pair of the same rounds is the one judged.
    runs["turns_keys_memory"] = row("turns_keys_memory", cpu=100)
    runs["turns_keys_redis"] = row("turns_keys_redis", cpu=108)
    lines = [g.line() for g in goals(runs, 200)]
    assert (
        "**PASS** ratelimit on Redis ≤ 1.10x the in-process store's CPU per request: "
        "1.08x (in turns)"
    ) in lines
    assert any(
        line.startswith(
            "**PASS** 2 workers: CPU per request ≤ 1.10x one worker's: "
            "1.05x CPU per request, 1.50x the requests per second"
        )
        for line in lines
    )


def test_two_workers_are_judged_on_a_workers_instructions_when_they_were_counted() -> None:
    def row(key: str, *, cpu: float, ins: int | None = None) -> TargetResult:
        return TargetResult(
            key, key, "x", cpu_us_per_request=cpu, rps_median=1000, instructions=ins
        )

    runs = {
        "gw_default": row("gw_default", cpu=100, ins=600_000),
        "turns_default": row("turns_default", cpu=100),
        # Four busy processes on two CPUs: each request's CPU time grows with the contention.
        "turns_default_w2": row("turns_default_w2", cpu=136, ins=606_000),
    }
    lines = [g.line() for g in goals(runs, 200)]
    assert any(
        line.startswith(
            "**PASS** 2 workers: CPU per request ≤ 1.10x one worker's: 1.01x by instructions "
            "per request of a worker (606,000 against 600,000); in turns 1.36x CPU per request"
        )
        for line in lines
    )
    runs["turns_default_w2"] = row("turns_default_w2", cpu=104, ins=700_000)
    lines = [g.line() for g in goals(runs, 200)]
    assert any(
        line.startswith("**FAIL** 2 workers: CPU per request ≤ 1.10x one worker's: 1.17x")
        for line in lines
    )


def test_usage_and_routing_are_judged_on_instructions_when_they_were_counted() -> None:
    def row(key: str, rps: float, ins: int | None = None) -> TargetResult:
        return TargetResult(key, key, "x", rps_median=rps, instructions=ins)

    runs = {
        "gw_default": row("gw_default", 900, 600_000),
        "turns_default": row("turns_default", 1000),
        "turns_with_usage": row("turns_with_usage", 900, 640_000),  # noisy turns: 10 %
        "plugin_none": row("plugin_none", 1000, 470_000),
        "plugin_routing": row("plugin_routing", 990, 560_000),  # 1 % in turns
    }
    lines = [g.line() for g in goals(runs, 200)]
    assert (
        "**FAIL** usage ≤ 5 % of the default pipeline's throughput: 6.2 % by instructions per "
        "request (640,000 with it, 600,000 without; 10.0 % of throughput in turns)"
    ) in lines
    assert (
        "**FAIL** routing ≤ 3 % of throughput (bare + routing against bare): 16.1 % by "
        "instructions per request (560,000 with it, 470,000 without; 1.0 % of throughput in turns)"
    ) in lines
    runs["turns_with_usage"] = row("turns_with_usage", 900, 620_000)
    runs["plugin_routing"].instructions = None
    lines = [g.line() for g in goals(runs, 200)]
    assert any(line.startswith("**PASS** usage ≤ 5 % ") for line in lines)  # 3.2 %
    assert (
        "**PASS** routing ≤ 3 % of throughput (bare + routing against bare): 1.0 % of throughput"
    ) in lines


def test_the_peer_latency_is_compared_in_turns_when_both_were_measured_so() -> None:
    def measured(key: str, alone: float, turns: float | None = None) -> TargetResult:
        r = TargetResult(key, key, "x", unloaded=WrkResult(1, 100, 1.0, alone, 2 * alone, 0))
        if turns is not None:
            r.latency_turns = WrkResult(1, 100, 1.0, turns, 2 * turns, 0)
        return r

    runs = {
        "direct": measured("direct", 100, 100),
        "gw_default": measured("gw_default", 1600, 800),  # a noisy run alone
        "litellm": measured("litellm", 20_100),
    }
    alone = peer_latency_goal(runs)
    assert (alone.status, alone.detail) == ("FAIL", "1500 µs against 20000 µs (one run each)")
    runs["litellm"].latency_turns = WrkResult(1, 100, 1.0, 16_100, 30_000, 0)
    in_turns = peer_latency_goal(runs)
    assert (in_turns.status, in_turns.detail) == ("PASS", "700 µs against 16000 µs (in turns)")


def test_the_gateway_targets_run_on_the_interpreter_they_are_given(tmp_path: Path) -> None:
    # Another path to this interpreter.  A script, not a symlink: a symlinked venv
    # interpreter no longer finds its pyvenv.cfg, and with it the venv's packages.
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    versions = interpreter_versions(str(python))
    assert versions == {
        "python": f"{platform.python_version()} ({python})",
        "aiohttp": metadata.version("aiohttp"),
        "uvloop": metadata.version("uvloop"),
    }


@pytest.mark.parametrize(
    ("prints", "refusal"),
    [
        ("", "cannot run the gateway on uvloop"),
        ("3.11.2 3.9.1 0.19.0 /elsewhere/gateway/__init__.py", "not from this checkout"),
    ],
)
def test_an_interpreter_that_cannot_run_this_gateway_is_refused(
    tmp_path: Path, prints: str, refusal: str
) -> None:
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\necho {prints}\n")
    python.chmod(0o755)
    with pytest.raises(SystemExit, match=refusal):
        interpreter_versions(str(python))
