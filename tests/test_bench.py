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

from bench.goals import access_log_goal, goals, peer_latency_goal
from bench.load import WrkResult
from bench.machine import interpreter_versions
from bench.records import TargetResult
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
    default, logless = result("gw_default", 900, 600_000), result("gw_no_log", 1000, 550_000)
    counted = access_log_goal({**turns, "gw_no_log": logless}, default)
    assert counted.status == "PASS"  # 1 - 550/600 = 8.3 %, though 20 % in turns
    assert counted.detail.startswith("8.3 % by instructions per request (600,000 with it")
    assert "20.0 % of throughput in turns" in counted.detail
    default.instructions = logless.instructions = None
    by_turns = access_log_goal({**turns, "gw_no_log": logless}, default)
    assert (by_turns.status, by_turns.detail) == ("FAIL", "20.0 % of throughput")
    alone = access_log_goal({"gw_no_log": logless}, result("gw_default", 950))
    assert (alone.status, alone.detail) == ("PASS", "5.0 % of throughput")


def test_the_latency_goals_show_what_the_aiohttp_pass_through_added() -> None:
    def unloaded(key: str, p50: float) -> TargetResult:
        return TargetResult(key, key, "x", unloaded=WrkResult(1, 100, 1.0, p50, 2 * p50, 0))

    runs = {k: unloaded(k, p50) for k, p50 in [("direct", 100), ("gw_default", 800)]}
    alone = [g.line() for g in goals(runs, 200)]
    assert "**FAIL** added latency over direct, unloaded p50 ≤ 200 µs: 700 µs (one run)" in alone
    runs["aiohttp_min"] = unloaded("aiohttp_min", 700)
    beside = [g.line() for g in goals(runs, 200)]
    assert (
        "**FAIL** added latency over direct, unloaded p50 ≤ 200 µs: 700 µs (one run); "
        "the aiohttp pass-through: 600 µs"
    ) in beside


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
