"""Soak test: hundreds of concurrent streams through the gateway while things break.

The upstream randomly completes, stalls past the idle timeout, or dies
mid-stream; the outbound SOCKS5 proxy (pproxy) is restarted now and then.
Afterwards the gateway's open file descriptors and memory must return to their
baseline, no request may hang, and every client must have got either a
complete answer or a clear error (an error status in the JSON envelope, or an
aborted connection).

    python -m bench.soak              # 400 streams for 60 s
    python -m bench.soak --short      # 100 streams for 8 s (what CI runs)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.procs import free_port

_PPROXY = (
    "import sys; sys.modules['uvloop'] = None; "
    "from pproxy.server import main; sys.argv = ['pproxy', *sys.argv[1:]]; main()"
)


def chaos_upstream(rng: random.Random) -> web.Application:
    """SSE streams that complete, stall or die, at random."""

    async def stream(request: web.Request) -> web.StreamResponse:
        fate = rng.choices(["complete", "stall", "die"], weights=[6, 2, 2])[0]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = rng.randint(5, 30)
        try:
            for i in range(events):
                if fate == "die" and i == events // 2:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                if fate == "stall" and i == events // 2:
                    await asyncio.sleep(5)  # past the gateway's idle timeout
                await response.write(f"data: {i}\n\n".encode())
                await asyncio.sleep(rng.uniform(0.005, 0.05))
            await response.write(b"data: [DONE]\n\n")
        except ConnectionError:
            pass  # the gateway gave up on this stream (idle timeout) and closed it
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stream)
    return app


class Proxy:
    """A pproxy SOCKS5 server that can be restarted on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PPROXY,
            "-l",
            f"socks5://127.0.0.1:{self.port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_for_port(self.port)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def restart_every(self, seconds: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except TimeoutError:
                await self.stop()
                await asyncio.sleep(0.2)  # clients meanwhile see connect failures: 502
                await self.start()
                self.restarts += 1


async def wait_for_port(port: int) -> None:
    for _ in range(400):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.025)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on {port}")


def gateway_config(upstream: str, proxy_port: int) -> str:
    return f"""
pipeline = ["upstream_proxy"]
[server]
log_level = "error"
drain_timeout = "2s"
[upstreams.chaos]
url = "{upstream}"
proxy = "socks5://127.0.0.1:{proxy_port}"
connect_timeout = "1s"
idle_timeout = "1s"
keepalive_timeout = "1s"
[plugins.upstream_proxy]
cooldown = "200ms"
[routes.chat]
path = "/v1/chat/completions"
upstream = "chaos"
"""


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def client(url: str, stop: asyncio.Event, outcomes: collections.Counter[str]) -> None:
    """Request streams until told to stop; classify how each one ended."""
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            outcomes[await one_stream(session, url)] += 1


async def one_stream(session: aiohttp.ClientSession, url: str) -> str:
    try:
        async with session.post(url, json={"stream": True}) as response:
            if response.status != 200:
                body = await response.json(content_type=None)
                return "error-envelope" if "error" in body else "error-unclear"
            data = await response.read()
            return "complete" if data.endswith(b"data: [DONE]\n\n") else "incomplete-clean-end"
    except aiohttp.ClientPayloadError:
        return "aborted"  # a clear signal: the connection ended without a clean end
    except TimeoutError:
        return "hung"
    except (aiohttp.ClientError, ValueError) as exc:
        return f"client-error:{type(exc).__name__}"


async def soak(streams: int, seconds: float, seed: int) -> bool:
    rng = random.Random(seed)
    runner = web.AppRunner(chaos_upstream(rng), access_log=None, handler_cancellation=True)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    proxy = Proxy()
    await proxy.start()
    config = Path(tempfile.mkdtemp()) / "soak.toml"
    config.write_text(gateway_config(f"http://127.0.0.1:{upstream_port}", proxy.port))
    port = free_port()
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "-c",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        await wait_for_port(port)
        warm: collections.Counter[str] = collections.Counter()
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                warm[await one_stream(session, url)] += 1
        await asyncio.sleep(1.5)
        base_fds, base_rss = open_fds(gateway.pid), rss_kib(gateway.pid)

        stop = asyncio.Event()
        outcomes: collections.Counter[str] = collections.Counter()
        restarter = asyncio.create_task(proxy.restart_every(max(1.0, seconds / 4), stop))
        clients = [asyncio.create_task(client(url, stop, outcomes)) for _ in range(streams)]
        peak_fds = base_fds
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            peak_fds = max(peak_fds, open_fds(gateway.pid))
        stop.set()
        await asyncio.wait_for(asyncio.gather(*clients, restarter), 30)

        await asyncio.sleep(3)  # idle keep-alive connections time out, pools settle
        end_fds, end_rss = open_fds(gateway.pid), rss_kib(gateway.pid)
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(gateway.wait(), 15)
        except TimeoutError:
            gateway.kill()
        await proxy.stop()
        await runner.cleanup()

    total = sum(outcomes.values())
    bad = {k: v for k, v in outcomes.items() if k not in ("complete", "error-envelope", "aborted")}
    # Pooled upstream connections (through the proxy) may stay open: allow a little slack.
    fds_ok = end_fds <= base_fds + 8
    rss_ok = end_rss <= base_rss * 1.25 + 8 * 1024
    print(f"streams={streams} seconds={seconds:g} requests={total} proxy_restarts={proxy.restarts}")
    print(f"outcomes: {dict(outcomes)}")
    print(
        f"fds: baseline={base_fds} peak={peak_fds} after={end_fds} -> {'ok' if fds_ok else 'LEAK'}"
    )
    print(f"rss KiB: baseline={base_rss} after={end_rss} -> {'ok' if rss_ok else 'GREW'}")
    passed = not bad and fds_ok and rss_ok and gateway.returncode == 0 and outcomes["complete"] > 0
    print("soak:", "PASS" if passed else f"FAIL {bad}")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="100 streams for 8 s (CI)")
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    streams, seconds = (100, 8.0) if args.short else (args.streams, args.seconds)
    return 0 if asyncio.run(soak(streams, seconds, args.seed)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
