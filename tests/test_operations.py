"""Hot reload, graceful drain and workers, with the gateway as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.proxies import free_port
from tests.upstreams import Upstream


def config(upstream_url: str, version: str, server: str = "") -> str:
    return f"""
pipeline = ["access_log"]
[server]
drain_timeout = "10s"
{server}
[upstreams.up]
url = "{upstream_url}"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
pipeline = ["rewrite"]
[routes.all.plugins.rewrite]
response_headers = {{ set = {{ "X-Config" = "{version}" }} }}
"""


class GatewayProcess:
    """``gateway run`` in a subprocess, with its output collected."""

    def __init__(self, config_path: Path, *args: str) -> None:
        self.port = free_port()
        self.args = [
            "run",
            "-c",
            str(config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self) -> GatewayProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                assert self.process.returncode is None, self.output
                try:
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return self
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        raise AssertionError(f"the gateway did not start: {self.output}")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            self.output.append(line.decode(errors="replace"))

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 20) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait_for(self._reader, 5)
        return code

    async def wait_for_output(self, text: str, timeout: float = 10) -> str:
        for _ in range(int(timeout / 0.05)):
            for line in self.output:
                if text in line:
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared in {self.output}")

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def processes():
    started: list[GatewayProcess] = []

    async def start(config_path: Path, *args: str) -> GatewayProcess:
        process = GatewayProcess(config_path, *args)
        started.append(process)
        return await process.start()

    yield start
    for process in started:
        await process.kill()


async def config_version(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/plain") as response:
        return response.headers["X-Config"]


async def wait_for_version(url: str, version: str) -> None:
    for _ in range(200):
        if await config_version(url) == version:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the config never became {version}")


async def test_sighup_reload_keeps_open_streams_and_refuses_bad_configs(
    tmp_path, serve_app, processes
):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1"))
    gateway = await processes(path)

    async with aiohttp.ClientSession() as session:
        stream = await session.get(gateway.url + "/sse")
        assert stream.headers["X-Config"] == "v1"
        assert await stream.content.readuntil(b"\n\n") == b"data: first\n\n"

        path.write_text(config(url, "v2"))
        gateway.signal(signal.SIGHUP)
        await wait_for_version(gateway.url, "v2")  # the next requests see the new config

        upstream.gate.set()  # the stream opened before the reload finishes on the old pipeline
        assert await stream.content.read() == b"data: second\n\ndata: [DONE]\n\n"
        stream.release()

    path.write_text(config(url, "v3").replace('url = "', 'url = "htp:/'))
    gateway.signal(signal.SIGHUP)
    refused = await gateway.wait_for_output("reload refused")
    assert "$.upstreams.up.url: not a URL" in refused
    assert await config_version(gateway.url) == "v2"  # the old config keeps serving
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0


async def test_a_reload_names_the_settings_that_need_a_restart(tmp_path, serve_app, processes):
    url = await serve_app(Upstream().app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1"))
    gateway = await processes(path)
    changed = 'client_idle_timeout = "5s"\nport = 1\nlog_format = "console"'
    path.write_text(config(url, "v2", changed))
    gateway.signal(signal.SIGHUP)
    warning = json.loads(await gateway.wait_for_output("need a restart"))
    assert warning["level"] == "warning"
    # The port comes from the command line, which wins: it needs nothing.
    assert warning["settings"] == ["server.client_idle_timeout", "server.log_format"]
    assert await config_version(gateway.url) == "v2"  # the rest was applied


async def test_watch_reloads_when_the_file_changes(tmp_path, serve_app, processes):
    url = await serve_app(Upstream().app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1"))
    gateway = await processes(path, "--watch")
    assert await config_version(gateway.url) == "v1"
    path.write_text(config(url, "v2"))
    await wait_for_version(gateway.url, "v2")
    await gateway.wait_for_output('"reason": "file changed"')


async def test_sigterm_drains_open_streams_then_exits_0(tmp_path, serve_app, processes):
    upstream = Upstream()
    url = await serve_app(upstream.app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1"))
    gateway = await processes(path)
    async with aiohttp.ClientSession() as session:
        stream = await session.get(gateway.url + "/sse")
        await stream.content.readuntil(b"\n\n")
        gateway.signal(signal.SIGTERM)
        await gateway.wait_for_output('"event": "draining"')
        with pytest.raises(aiohttp.ClientConnectionError):  # no longer accepting
            async with aiohttp.ClientSession() as fresh, fresh.get(gateway.url + "/plain"):
                pass
        upstream.gate.set()
        assert await stream.content.read() == b"data: second\n\ndata: [DONE]\n\n"
        stream.release()
    assert await gateway.wait() == 0
    assert '"drained": true' in "".join(gateway.output)


async def test_drain_timeout_ends_what_is_still_running_and_exits_soon_after(
    tmp_path, serve_app, processes
):
    drain_timeout = 1.0
    upstream = Upstream()
    url = await serve_app(upstream.app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1").replace('"10s"', f'"{drain_timeout}s"'))
    gateway = await processes(path)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        # Streams that keep sending (an event stream opened before a reload among them),
        # a plain body that keeps coming, and a request whose answer has not begun.
        old_config_stream = await session.get(gateway.url + "/heartbeat")
        await old_config_stream.content.readuntil(b"\n\n")
        gateway.signal(signal.SIGHUP)
        await gateway.wait_for_output('"config reloaded"')
        stream = await session.get(gateway.url + "/heartbeat")
        await stream.content.readuntil(b"\n\n")
        plain = await session.get(gateway.url + "/trickle")
        await plain.content.readexactly(1)
        waiting = asyncio.ensure_future(session.get(gateway.url + "/slow-head"))
        for _ in range(500):  # until the upstream has it
            if any(seen["path_qs"] == "/slow-head" for seen in upstream.requests):
                break
            await asyncio.sleep(0.01)

        gateway.signal(signal.SIGTERM)
        signalled = loop.time()
        await gateway.wait_for_output('"event": "draining"')
        with pytest.raises(aiohttp.ClientConnectionError):  # refused at once
            async with aiohttp.ClientSession() as fresh, fresh.get(gateway.url + "/plain"):
                pass

        for events in (old_config_stream, stream):
            body = await asyncio.wait_for(events.content.read(), 10)  # a clean end
            last = json.loads(body.rstrip().rsplit(b"\n\n", 1)[-1].removeprefix(b"data: "))
            assert last["error"]["code"] == "shutting_down", body[-300:]
        with pytest.raises(aiohttp.ClientPayloadError):  # cut, so that it shows
            await asyncio.wait_for(plain.content.read(), 10)
        answer = await asyncio.wait_for(waiting, 10)
        assert answer.status == 503
        assert (await answer.json())["error"]["code"] == "shutting_down"
        assert await gateway.wait(10) == 0
        exited = loop.time() - signalled
    assert exited < drain_timeout + 1, f"exited {exited:.2f} s after SIGTERM"
    assert '"drained": false' in "".join(gateway.output)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


async def test_workers_share_one_port_and_follow_signals(tmp_path, serve_app, processes):
    url = await serve_app(Upstream().app)
    path = tmp_path / "config.toml"
    path.write_text(config(url, "v1"))
    gateway = await processes(path, "--workers", "2")
    assert gateway.process is not None
    workers = children(gateway.process.pid)
    assert len(workers) == 2
    for _ in range(50):  # every worker may answer; both must be up
        await asyncio.sleep(0.02)
        if (
            all(Path(f"/proc/{w}").exists() for w in workers)
            and sum(1 for line in gateway.output if '"gateway started"' in line) == 2
        ):
            break
    started = [line for line in gateway.output if '"gateway started"' in line]
    assert len(started) == 2 and len({line.split('"pid": ')[1][:6] for line in started}) == 2

    path.write_text(config(url, "v2"))
    gateway.signal(signal.SIGHUP)  # forwarded to both workers
    for _ in range(200):
        if sum(1 for line in gateway.output if '"config reloaded"' in line) == 2:
            break
        await asyncio.sleep(0.05)
    versions = {await config_version(gateway.url) for _ in range(20)}
    assert versions == {"v2"}

    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0
    assert not any(Path(f"/proc/{w}").exists() and _alive(w) for w in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    return state != "Z"


async def test_a_burst_of_connections_waits_its_turn_rather_than_being_dropped(
    tmp_path, serve_app, processes
):
    # The kernel completes connections into the listen queue without the gateway; a
    # connection beyond the queue's length loses its SYN, and its client tries again
    # only a second later.  aiohttp's own default length is 128.
    burst = 300
    if int(Path("/proc/sys/net/core/somaxconn").read_text()) < burst:
        pytest.skip("the kernel caps every listen queue under the burst (net.core.somaxconn)")
    path = tmp_path / "config.toml"
    path.write_text(config(await serve_app(Upstream().app), "v1"))
    gateway = await processes(path)
    gateway.signal(signal.SIGSTOP)  # a busy gateway: it accepts nothing for now
    try:
        opened = await asyncio.gather(
            *(
                asyncio.wait_for(asyncio.open_connection("127.0.0.1", gateway.port), 0.5)
                for _ in range(burst)
            ),
            return_exceptions=True,
        )
    finally:
        gateway.signal(signal.SIGCONT)
    connections = [c for c in opened if isinstance(c, tuple)]
    assert len(connections) == burst, [repr(e) for e in opened if not isinstance(e, tuple)][:3]

    async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"GET /plain HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 20)
        writer.close()
        return status

    statuses = await asyncio.gather(*(ask(r, w) for r, w in connections))
    assert set(statuses) == {b"HTTP/1.1 200 OK\r\n"}
