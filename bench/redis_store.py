"""The ``ratelimit`` plugin's Redis store under a burst, and the gateway with Redis hung.

``python -m bench.redis_store`` runs both parts (about a minute); ``pool`` or
``hung`` runs one.  The figures go in bench/README.md by hand: this is a
one-off measurement behind a design choice, not part of ``python -m bench``.

- ``pool``: one process makes ``--concurrency`` decisions at once, again and
  again, against a private ``redis-server``: with the store as shipped (the
  decisions of one event-loop tick batched into one pipeline, `ScriptBatcher`)
  and with one ``EVALSHA`` per decision over redis-py's
  ``BlockingConnectionPool`` of several sizes.  It reports decisions per
  second, the latency of one decision (p50, p99), this process's CPU per
  decision, Redis's CPU per decision, and failures: decisions that could not
  be made (redis-py's pool gives up on a waiter after 5 s here).  The circuit
  breaker is off in this part, which compares the raw mechanisms.
- ``hung``: the bench upstream, Redis and ``gateway run`` with the ``keys_redis``
  variant (``fail_open = true``, the default); wrk with 20 connections for
  ``--seconds``, then again with Redis SIGSTOPped, then once more after SIGCONT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from bench.load import find_wrk, run_wrk, write_script
from bench.procs import Procs, can_pin
from bench.targets import Launcher, all_targets, start_redis, start_upstream
from gateway_plugins.ratelimit.config import RuleConfig
from gateway_plugins.ratelimit.redis_store import RedisStore
from gateway_plugins.ratelimit.rules import Rule
from gateway_plugins.ratelimit.store import Check

RULE = Rule.of(RuleConfig(name="bench", requests=10**12, period="day"), 0)


class OneCallPerConnection:
    """The alternative to batching: each call takes a pooled connection for one EVALSHA."""

    def __init__(self, url: str, connections: int) -> None:
        pool = BlockingConnectionPool.from_url(url, max_connections=connections, timeout=5.0)
        self.client = Redis.from_pool(pool)
        self.scripts = {name: self.client.register_script(text) for name, text in _scripts()}

    async def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self.scripts[script](keys=keys, args=args)

    def reject_waiting(self, error: BaseException) -> None:
        """Nothing is queued here: every call waits for a connection instead."""

    async def close(self) -> None:
        await self.client.aclose()


def _scripts() -> list[tuple[str, str]]:
    from gateway_plugins.ratelimit.lua import ACQUIRE, RENEW, SETTLE

    return [("acquire", ACQUIRE), ("settle", SETTLE), ("renew", RENEW)]


async def redis_cpu(url: str) -> float:
    client = Redis.from_url(url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def burst(url: str, mode: str, connections: int, concurrency: int, seconds: float) -> str:
    prefix = f"bench:{mode}:{connections}:"
    store = RedisStore(url, prefix, timeout=5.0, lease=60.0, pool_size=connections)
    await store.start()
    # Measured without the breaker, which would turn the first failure into fast ones.
    store.breaker.failed = lambda error: False  # type: ignore[method-assign]
    if mode == "pool":
        await store._batcher.close()  # type: ignore[union-attr]
        store._batcher = OneCallPerConnection(url, connections)  # type: ignore[assignment]
    checks = [Check(RULE, "bench:hot")]
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def decide() -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                decision = await store.acquire(checks, "s")
            except Exception:
                failures += 1
                continue
            if not decision.admitted:
                failures += 1
            latencies.append(time.perf_counter() - began)

    cpu, redis_before, began = time.process_time(), await redis_cpu(url), time.monotonic()
    await asyncio.gather(*(decide() for _ in range(concurrency)))
    wall = time.monotonic() - began
    cpu, redis_spent = time.process_time() - cpu, await redis_cpu(url) - redis_before
    await store.close()
    count = len(latencies)
    cuts = statistics.quantiles(latencies, n=100)
    name = "batched (as shipped)" if mode == "batch" else "one EVALSHA per decision"
    return (
        f"| {name} | {connections} | {count / wall:,.0f} | {cuts[49] * 1000:.1f} | "
        f"{cuts[98] * 1000:.1f} | {cpu / count * 1e6:.0f} | {redis_spent / count * 1e6:.1f} | "
        f"{failures} |"
    )


def run_pool(concurrency: int, seconds: float) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    with tempfile.TemporaryDirectory() as workdir:
        procs = Procs(Path(workdir), can_pin())
        try:
            url = start_redis(procs, Path(workdir), binary)
            print(f"{concurrency} decisions at once, {seconds:.0f} s each, one process (uvloop)")
            print(
                "| store | connections | decisions/s | p50 ms | p99 ms | CPU µs/decision "
                "| Redis CPU µs/decision | failures |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            runs = [("batch", 10), ("pool", 10), ("pool", 50), ("pool", 100), ("batch", 1)]
            for mode, connections in runs:
                line = _run(burst(url, mode, connections, concurrency, seconds))
                print(line, flush=True)
        finally:
            procs.stop_all()


def _run(coroutine: Any) -> Any:
    import uvloop

    return uvloop.run(coroutine)


def run_hung(seconds: float) -> None:
    wrk = find_wrk()
    binary = shutil.which("redis-server")
    if wrk is None or binary is None:
        sys.exit("wrk and redis-server are needed")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        procs = Procs(workdir, can_pin())
        try:
            upstream_url, upstream_pid = start_upstream(procs)
            redis_url = start_redis(procs, workdir, binary)
            redis_pid = procs.children["redis"].pid
            target = next(t for t in all_targets() if t.key == "gw_keys_redis")
            launcher = Launcher(
                procs,
                workdir,
                upstream_url,
                upstream_pid,
                nofile,
                redis_url,
                python=sys.executable,
            )
            running = launcher.start(target)
            script = write_script(workdir, "keyed", target.json_request)

            def measure(label: str) -> float:
                found = run_wrk(
                    wrk,
                    running.base_url,
                    target.json_request,
                    script,
                    connections=20,
                    seconds=seconds,
                )
                print(
                    f"| {label} | {found.rps:,.0f} | {found.p50_us / 1000:.1f} | "
                    f"{found.p99_us / 1000:.1f} | {found.errors} |",
                    flush=True,
                )
                return found.rps

            print(
                "gateway (keys_redis: default pipeline, auth keys, ratelimit on Redis, "
                f"fail_open), wrk -c20, {seconds:.0f} s each"
            )
            print("| Redis | requests/s | p50 ms | p99 ms | errors |")
            print("| --- | --- | --- | --- | --- |")
            measure("running")
            normal = measure("running (again)")
            os.kill(redis_pid, signal.SIGSTOP)
            try:
                hung = measure("SIGSTOPped")
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            measure("after SIGCONT")
            print(f"hung / running: {hung / normal:.2f}")
        finally:
            procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_store", description=__doc__)
    parser.add_argument("part", nargs="?", choices=("pool", "hung", "all"), default="all")
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.part in ("pool", "all"):
        run_pool(args.concurrency, args.seconds)
    if args.part in ("hung", "all"):
        run_hung(args.seconds)


if __name__ == "__main__":
    main()
