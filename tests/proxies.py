"""Real outbound proxies for tests: pproxy (HTTP, SOCKS4, SOCKS5) and microsocks (SOCKS5)
in subprocesses, and a hung proxy that accepts and never answers."""

from __future__ import annotations

import asyncio
import socket
import sys

# pproxy calls asyncio.get_event_loop() at start, which uvloop (when installed)
# refuses; hiding uvloop makes pproxy use plain asyncio.
_LAUNCH = (
    "import sys; sys.modules['uvloop'] = None; "
    "from pproxy.server import main; sys.argv = ['pproxy', *sys.argv[1:]]; main()"
)


async def listening(port: int) -> bool:
    """Whether something listens on ``127.0.0.1:port`` within 5 s."""
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.025)
            continue
        writer.close()
        return True
    return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ProxyServer:
    """A pproxy process listening on 127.0.0.1; ``log`` collects its verbose output."""

    def __init__(self, scheme: str, user: str | None = None, password: str | None = None) -> None:
        self.scheme = scheme
        self.port = free_port()
        self.credentials = f"{user}:{password}" if user else None
        self.process: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        auth = f"{self.credentials}@" if self.credentials else ""
        return f"{self.scheme}://{auth}127.0.0.1:{self.port}"

    async def start(self) -> ProxyServer:
        listen = f"{self.scheme}://127.0.0.1:{self.port}"
        if self.credentials:
            listen += f"#{self.credentials}"
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            "-c",
            _LAUNCH,
            "-l",
            listen,
            "--auth",
            "0",
            "-v",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        if not await listening(self.port):
            raise RuntimeError(f"pproxy did not start: {self.log}")
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            self.log.append(line.decode(errors="replace").strip())

    async def tunnels_to(self, port: int, expect: int = 1) -> int:
        """How many connections the proxy opened to ``127.0.0.1:port``.

        Its log arrives through a pipe, so wait (up to 2 s) for ``expect`` of them.
        """
        for _ in range(80):
            count = sum(1 for line in self.log if line.endswith(f"-> 127.0.0.1:{port}"))
            if count >= expect:
                break
            await asyncio.sleep(0.025)
        return count

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()


class Microsocks:
    """A microsocks (SOCKS5) process on 127.0.0.1, with a user and password."""

    def __init__(self, user: str, password: str) -> None:
        self.port = free_port()
        self.user, self.password = user, password
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"socks5://{self.user}:{self.password}@127.0.0.1:{self.port}"

    async def start(self) -> Microsocks:
        self.process = await asyncio.create_subprocess_exec(
            "microsocks", "-i", "127.0.0.1", "-p", str(self.port),
            "-u", self.user, "-P", self.password,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if not await listening(self.port):
            raise RuntimeError("microsocks did not start")
        return self

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


class BlackHole:
    """A hung proxy: it accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, scheme: str = "socks5") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> BlackHole:
        self.server = await asyncio.start_server(self._swallow, "127.0.0.1", 0)
        return self

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)  # held open, never written to

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self.server.wait_closed()
