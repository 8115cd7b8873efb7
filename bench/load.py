"""Load for small JSON answers: wrk, driven with a Lua script that reports in JSON.

wrk runs one thread on the load CPU.  The script sets the request (method,
body, headers) and, when wrk is done, prints one ``BENCH {...}`` line with the
request count, the percentiles (microseconds, from wrk's own histogram) and
every kind of error, so nothing is scraped from wrk's human-readable output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import attrs

WRK_CANDIDATES = ("wrk", "/usr/bin/wrk")

LUA = """\
wrk.method = "{method}"
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@attrs.frozen
class Request:
    """One kind of request a target is asked: method, path, body and headers."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)


@attrs.frozen
class WrkResult:
    """What one wrk run measured."""

    connections: int
    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    #: Socket errors and non-2xx/3xx answers: any of them makes the run invalid.
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def find_wrk() -> str | None:
    """The wrk binary, or ``None`` when it is not installed."""
    for candidate in WRK_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def lua_string(data: bytes) -> str:
    """``data`` as a double-quoted Lua string literal (every byte outside ASCII escaped)."""
    out = []
    for byte in data:
        char = chr(byte)
        if char in '\\"' or not 32 <= byte < 127:
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def write_script(directory: Path, name: str, request: Request) -> Path:
    """The Lua script that makes wrk send ``request`` and report in JSON."""
    headers = "\n".join(
        f"wrk.headers[{lua_string(k.encode())}] = {lua_string(v.encode())}"
        for k, v in request.headers
    )
    path = directory / f"{name}.lua"
    path.write_text(
        LUA.format(method=request.method, body=lua_string(request.body), headers=headers)
    )
    return path


def parse_report(output: str, connections: int) -> WrkResult:
    """The ``BENCH`` line of a wrk run's output, as a `WrkResult`."""
    for line in output.splitlines():
        if line.startswith("BENCH "):
            data = json.loads(line[len("BENCH ") :])
            errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
            return WrkResult(
                connections=connections,
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                p50_us=float(data["p50_us"]),
                p99_us=float(data["p99_us"]),
                errors=int(errors),
            )
    raise RuntimeError(f"wrk printed no BENCH line:\n{output[-2000:]}")


def run_wrk(
    wrk: str,
    base_url: str,
    request: Request,
    script: Path,
    *,
    connections: int,
    seconds: float,
) -> WrkResult:
    """Run wrk (one thread) against ``base_url + request.path`` for ``seconds``."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url + request.path,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return parse_report(done.stdout, connections)
