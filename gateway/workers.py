"""``gateway run --workers N``: N processes serving one port through ``SO_REUSEPORT``.

The parent starts the workers as child processes, forwards ``SIGTERM``,
``SIGINT`` and ``SIGHUP`` to them, and exits when they have all exited.  Each
worker has its own in-process state: limits shared across workers (and across
replicas) need the Redis store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def per_process_warnings(plugins: Iterable[object]) -> list[str]:
    """What plugins keep per process and would count apart in each worker.

    A plugin says so with a ``per_process_state`` attribute (a message, or
    ``None``); the ``ratelimit`` plugin does on its in-process store.
    """
    found = (getattr(plugin, "per_process_state", None) for plugin in plugins)
    return list(dict.fromkeys(message for message in found if message))


def run_workers(count: int, worker_args: list[str]) -> int:
    """Run ``count`` workers with ``worker_args``; return the worst exit status."""
    clear_metrics_dir()
    command = [sys.executable, "-m", "gateway", "run", "--reuse-port", *worker_args]
    children = [subprocess.Popen(command) for _ in range(count)]  # noqa: S603

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    statuses = []
    for child in children:
        while True:
            try:
                statuses.append(child.wait())
                forget_metrics_of(child.pid)
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                time.sleep(0.01)
    return max((abs(s) for s in statuses), default=0)


def clear_metrics_dir() -> None:
    """Start Prometheus multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) from a clean slate."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for path in Path(directory).glob("*.db"):
            path.unlink(missing_ok=True)


def forget_metrics_of(pid: int) -> None:
    """Drop a dead worker's live gauges (open streams) from the multiprocess totals."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
