"""Instructions per request under valgrind's callgrind (`bench/instructions.sh`).

Wall-clock figures on a shared VM swing by ±20 % from run to run; instruction
counts repeat to about 0.5 %, so they settle what a small part of the pipeline
costs (the access log's share of the default pipeline).  They do not see cache
misses or system calls.  Run only in full mode, and only when valgrind is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SCRIPT = Path(__file__).with_name("instructions.sh")
_LINE = re.compile(r"^(\S+): (\d+) instructions/request$", re.MULTILINE)


def available() -> bool:
    """Whether valgrind (with callgrind_control) is installed."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def count(variants: Sequence[str], python: str, timeout: float = 900) -> dict[str, int]:
    """Instructions per request of each gateway config variant (`bench.gateway_configs`),
    the gateway running on ``python``."""
    done = subprocess.run(
        ["bash", str(SCRIPT), *variants],
        env={**os.environ, "PYTHON": python},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return {m[1]: int(m[2]) for m in _LINE.finditer(done.stdout)}
