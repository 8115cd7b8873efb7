"""``--workers N`` without Redis: each worker counts alone, and the operator is told so."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from tests.test_operations import GatewayProcess, children

WARNING = "each worker counts the rate limits alone"


def config(store: str) -> str:
    return f"""
pipeline = ["ratelimit"]
[plugins.ratelimit]
{store}
[[plugins.ratelimit.rules]]
name = "daily"
key = "client_ip"
requests = 100
period = "day"
[upstreams.up]
url = "http://127.0.0.1:9"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


def check(path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_check_warns_about_limits_counted_in_process_memory(tmp_path):
    path = tmp_path / "memory.toml"
    path.write_text(config('store = "memory"'))
    output = check(path)
    assert f"warning: ratelimit: with --workers N {WARNING}" in output
    assert "redis_url" in output
    path.write_text(config('redis_url = "redis://127.0.0.1:6379/0"'))
    assert WARNING not in check(path)


async def kill_all(gateway: GatewayProcess) -> None:
    """Kill the workers too (killing the parent alone would orphan them)."""
    if gateway.process is not None and gateway.process.returncode is None:
        for pid in children(gateway.process.pid):
            os.kill(pid, signal.SIGKILL)
    await gateway.kill()


async def test_run_with_workers_warns_once_at_start(tmp_path):
    path = tmp_path / "memory.toml"
    path.write_text(config('store = "memory"'))
    gateway = GatewayProcess(path, "--workers", "2")
    try:
        await gateway.start()
        line = await gateway.wait_for_output(WARNING)
        event = json.loads(line)
        assert event["level"] == "warning"
        assert event["workers"] == 2
        assert "redis_url" in event["event"]
        for _ in range(200):  # both workers up: a signal before that would kill one
            if sum('"gateway started"' in line for line in gateway.output) == 2:
                break
            await asyncio.sleep(0.05)
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait() == 0
        assert sum(WARNING in line for line in gateway.output) == 1
    finally:
        await kill_all(gateway)


async def test_run_with_one_worker_does_not_warn(tmp_path):
    path = tmp_path / "memory.toml"
    path.write_text(config('store = "memory"'))
    gateway = await GatewayProcess(path).start()
    try:
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait() == 0
        assert not any(WARNING in line for line in gateway.output)
    finally:
        await gateway.kill()
