"""``metrics`` under ``gateway run --workers 2`` with ``PROMETHEUS_MULTIPROC_DIR``: one sum."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.plugins.test_metrics import requests, scrape_until
from tests.test_cli import read_until, start_run, stop_run
from tests.upstreams import Upstream

#: Connections to the gateway, each new: ``SO_REUSEPORT`` spreads them over the workers.
CONNECTIONS = 40


async def test_a_scrape_sums_what_every_worker_counted(serve_app, tmp_path: Path):
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f"""
pipeline = ["metrics"]
[upstreams.up]
url = "{await serve_app(Upstream().app)}"
[routes.metrics]
methods = ["GET"]
path = "/metrics"
[routes.api]
path = "/api/{{rest*}}"
upstream = "up"
upstream_path = "/{{rest}}"
""")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prometheus_dir)}
    process, url = await start_run(tmp_path, env, "-c", str(config), "--workers", "2")
    try:
        started = await read_until(process, '"event": "gateway started"')
        if started.count('"event": "gateway started"') < 2:
            await read_until(process, '"event": "gateway started"')
        for _ in range(CONNECTIONS):
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(url + "/api/echo") as response:
                    assert response.status == 200
                    await response.read()
        # Both workers answered: each wrote its counts into files of its own.
        async with aiohttp.ClientSession() as session:
            samples = await scrape_until(
                session, url, lambda s: requests(s, "api", "GET", 200) >= CONNECTIONS
            )
        workers = {path.stem.rsplit("_", 1)[1] for path in prometheus_dir.glob("counter_*.db")}
    finally:
        _, err = await stop_run(process)
    assert process.returncode == 0, err
    assert len(workers) == 2
    assert requests(samples, "api", "GET", 200) == CONNECTIONS
