"""The soak test's short mode: many streams while the upstream and proxy misbehave."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak_passes():
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "soak: PASS" in result.stdout
    assert "'hung'" not in result.stdout
