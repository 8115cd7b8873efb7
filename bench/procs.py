"""Child processes of a bench run: start pinned, wait until ready, read /proc, stop.

Every child starts in its own session (its own process group), so that stopping
it also stops whatever it forked (nginx's worker, LiteLLM's server).  `Procs`
remembers each one and `Procs.stop_all` ends them all, which the runner calls
in ``finally`` and on SIGTERM: nothing outlives a run, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The CPU the process under test runs on, and the one for everything else.
PROXY_CPU, LOAD_CPU = 0, 1


def can_pin() -> bool:
    """Whether this machine has the two CPUs the runner pins to."""
    return hasattr(os, "sched_setaffinity") and {PROXY_CPU, LOAD_CPU} <= os.sched_getaffinity(0)


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_tcp(port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until something listens on ``127.0.0.1:port`` (or raise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process died before it listened on port {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f}s")


def wait_http(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``url`` until it answers anything but a connection error (or raise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process died before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered, if only with an error status
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


class Procs:
    """The children of one run, each in its own process group."""

    def __init__(self, log_dir: Path, pin: bool) -> None:
        self.log_dir = log_dir
        self.pin = pin
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` pinned to ``cpu`` (``None``: every CPU); its output goes to
        ``LOG_DIR/NAME.log``."""
        self.stop(name)
        cpus = set(range(os.cpu_count() or 1)) if cpu is None else {cpu}

        def in_child() -> None:
            if self.pin:
                os.sched_setaffinity(0, cpus)

        log = (self.log_dir / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                # Safe here: the runner starts children from its only thread.
                preexec_fn=in_child,
            )
        finally:
            log.close()
        self.children[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The end of a child's output, to explain why it failed."""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, name: str, grace: float = 5.0) -> None:
        """SIGTERM the child's process group, then SIGKILL it after ``grace`` seconds."""
        proc = self.children.pop(name, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        # The group may hold more than the leader (nginx's worker): make sure.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)

    def stop_all(self) -> None:
        """Stop every child still running, newest first."""
        for name in reversed(list(self.children)):
            self.stop(name)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its descendants, in seconds."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of ``pid`` and its descendants, in bytes."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total
