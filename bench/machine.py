"""The machine a run measured on: CPUs, kernel, load, and the versions of everything."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _tool_version(argv: Sequence[str], pattern: str) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    found = re.search(pattern, done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


ROOT = Path(__file__).resolve().parent.parent
_PROBE = (
    "import aiohttp, gateway, platform, uvloop; "
    "print(platform.python_version(), aiohttp.__version__, uvloop.__version__, gateway.__file__)"
)


def interpreter_versions(python: str) -> dict[str, str]:
    """The Python, aiohttp and uvloop versions the gateway runs with on ``python``.

    Exits with a message when ``python`` cannot run this checkout's gateway on uvloop.
    """
    if python == sys.executable:
        return {
            "python": platform.python_version(),
            "aiohttp": _version("aiohttp"),
            "uvloop": _version("uvloop"),
        }
    try:
        done = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise SystemExit(f"--python {python}: {exc}") from None
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 4:
        raise SystemExit(
            f"--python {python} cannot run the gateway on uvloop; install this checkout "
            f"into it: {python} -m pip install -e '.[redis,speed]'\n{done.stderr[-600:]}"
        )
    version, aiohttp, uvloop, module = fields
    if not Path(module).resolve().is_relative_to(ROOT):
        raise SystemExit(
            f"--python {python} runs the gateway from {module}, not from this checkout: "
            f"{python} -m pip install -e '.[redis,speed]'"
        )
    return {"python": f"{version} ({python})", "aiohttp": aiohttp, "uvloop": uvloop}


def machine_info(
    nginx: str | None, wrk: str | None, litellm_version: str | None, python: str
) -> dict[str, str]:
    """What the numbers were measured on; ``python`` runs the gateway targets."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        **interpreter_versions(python),
        "nginx": _tool_version([nginx, "-v"], r"nginx/(\S+)") if nginx else "not installed",
        "wrk": _tool_version([wrk, "-v"], r"wrk (\S+)") if wrk else "not installed",
        "litellm": litellm_version or "not installed",
    }
