"""The in-process counters across reloads of a real ``gateway run`` process."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.test_operations import GatewayProcess
from tests.test_reload_guards import statuses
from tests.upstreams import Upstream


def config(url: str, extra_rule: str = "") -> str:
    return f"""
pipeline = ["ratelimit"]
[plugins.ratelimit]
store = "memory"
[[plugins.ratelimit.rules]]
name = "daily"
key = "client_ip"
requests = 20
period = "day"
{extra_rule}
[upstreams.up]
url = "{url}"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


@pytest.fixture
async def gateway(tmp_path, serve_app):
    url = await serve_app(Upstream().app)
    path = tmp_path / "config.toml"
    path.write_text(config(url))
    process = GatewayProcess(path)
    await process.start()
    yield process, path, url
    await process.kill()


async def reload(process: GatewayProcess, outcome: str) -> str:
    """Send SIGHUP and wait for the next line saying ``outcome``."""
    before = sum(1 for line in process.output if outcome in line)
    process.signal(signal.SIGHUP)
    for _ in range(200):
        lines = [line for line in process.output if outcome in line]
        if len(lines) > before:
            return lines[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{outcome!r} never came: {process.output}")


async def test_counters_of_unchanged_rules_survive_every_reload(gateway):
    process, path, url = gateway
    assert await statuses(process.url, 15) == [200] * 15
    path.write_text("")  # emptied by mistake: refused, nothing forgotten
    assert "no routes" in await reload(process, "reload refused")
    burst = 'name = "burst"\nkey = "client_ip"\nrate = "100/s"\nburst = 100'
    path.write_text(config(url, f"[[plugins.ratelimit.rules]]\n{burst}"))
    await reload(process, "config reloaded")
    path.write_text(config(url))  # and back
    await reload(process, "config reloaded")
    assert await statuses(process.url, 6) == [200] * 5 + [429]
