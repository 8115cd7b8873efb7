"""What a reload must not swap in: a config with no routes, or a file still being written."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import aiohttp
import pytest

from tests import test_operations
from tests.test_operations import GatewayProcess, config, config_version, wait_for_version
from tests.upstreams import Upstream

#: The gateway processes of a test, stopped after it.
processes = test_operations.processes

NO_ROUTES = "$.routes: the config defines no routes, so every request would answer 404"


def count(gateway: GatewayProcess, text: str) -> int:
    return sum(1 for line in gateway.output if text in line)


async def statuses(url: str, times: int) -> list[int]:
    async with aiohttp.ClientSession() as session:
        found = []
        for _ in range(times):
            async with session.get(url + "/plain") as response:
                found.append(response.status)
        return found


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "[server]\nport = 8080\n"])
def test_check_and_run_refuse_a_config_without_routes(tmp_path, text):
    path = tmp_path / "empty.toml"
    path.write_text(text)
    for command in ("check", "run"):
        result = subprocess.run(
            [sys.executable, "-m", "gateway", command, "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, (command, result.stdout)
        assert f"{path}: {NO_ROUTES}" in result.stderr


async def test_a_reload_to_a_file_without_routes_is_refused(tmp_path, serve_app, processes):
    url = await serve_app(Upstream().app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1"))
    gateway = await processes(path)
    path.write_text("")
    gateway.signal(signal.SIGHUP)
    refused = await gateway.wait_for_output("reload refused")
    assert NO_ROUTES in refused
    assert await statuses(gateway.url, 3) == [200, 200, 200]  # the old config serves on


async def test_watch_loads_a_file_only_once_it_has_stopped_changing_and_parses(
    tmp_path, serve_app, processes
):
    url = await serve_app(Upstream().app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1"))
    gateway = await processes(path, "--watch")

    # Half a file (cut inside a table), left as it is for longer than a poll: it
    # never parses, so it is never loaded, and the old config serves meanwhile.
    whole = config(url, "v2")
    path.write_text(whole[: whole.index("[routes.all]") + 8])
    await gateway.wait_for_output("config file does not parse", timeout=5)
    assert await config_version(gateway.url) == "v1"
    # An editor saving in small steps, faster than the file settles: one reload, of the end.
    for step in range(8):
        path.write_text(config(url, f"step-{step}"))
        await asyncio.sleep(0.15)
    path.write_text(whole)
    await wait_for_version(gateway.url, "v2")
    await asyncio.sleep(1.5)  # a poll more: nothing else is loaded
    assert count(gateway, "reload refused") == 0
    assert count(gateway, '"config reloaded"') == 1
    assert "step-" not in "".join(line for line in gateway.output if "reload" in line)

    # An empty file parses, but defines no routes: refused, the old config serves on.
    path.write_text("")
    refused = await gateway.wait_for_output("reload refused", timeout=5)
    assert NO_ROUTES in refused
    assert await config_version(gateway.url) == "v2"
