"""Where a target's time goes: py-spy sampling it during the 50-connection wrk run.

``python -m bench --profile`` records every gateway target with py-spy (``pip
install py-spy``) and prints, for each, the frames that hold the most samples:
by *self* time (the function itself) and *inclusive* time (with its callees) of
gateway and plugin code.  py-spy pauses the target for each sample, so a
profiled run's figures are slower and never written to bench/README.md.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path

PY_SPY = "py-spy"
RATE = 100  # samples per second
OURS = ("gateway/", "plugins/")


def find_py_spy() -> str | None:
    return shutil.which(PY_SPY)


def start_recording(binary: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` for ``seconds`` into ``out`` (py-spy's raw, collapsed-stack format)."""
    argv = [binary, "record", "-p", str(pid), "-d", str(max(1, round(seconds)))]
    # Blocking mode (py-spy pauses the process per sample): whole, consistent stacks.
    argv += ["-r", str(RATE), "-f", "raw", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """The sampled stacks of a raw py-spy file, root first, with their counts."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    """``func (path/to/module.py:12)`` shortened to ``func (module.py:12)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize(path: Path, top: int = 15) -> str:
    """The hottest frames of a recording: self time, then inclusive time of our code."""
    stacks = read_stacks(path)
    total = sum(count for _, count in stacks)
    if not total:
        return "no samples"
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples; self time:"]
    lines += [f"  {n / total * 100:5.1f} %  {short(f)}" for f, n in own.most_common(top)]
    lines.append("inclusive time, gateway and plugin code:")
    # Frames in (nearly) every sample are the entry point (cli, run_async): not news.
    ours = [
        (f, n) for f, n in inclusive.most_common() if any(p in f for p in OURS) and n < 0.99 * total
    ]
    lines += [f"  {n / total * 100:5.1f} %  {short(f)}" for f, n in ours[:top]]
    return "\n".join(lines)
