"""A real ``redis-server`` for tests: started on a free port, stopped and restarted at will."""

from __future__ import annotations

import asyncio
import shutil
import time

from tests.proxies import free_port

#: The binary, or ``None`` when Redis is not installed (tests that need it are skipped).
REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """One ``redis-server`` process without persistence, on ``port`` of 127.0.0.1.

    ``password`` turns on ``requirepass``.  `stop` terminates the process (Redis
    forgets everything), `start` starts it again on the same port.
    """

    def __init__(self, password: str | None = None, port: int | None = None) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port()
        self.password = password
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0, with the password if there is one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers ``PING``."""
        assert REDIS_SERVER is not None
        command = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not await self._answers_ping():
            if self.process.returncode is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        """Terminate the server and wait for it to exit (its port is then closed)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self) -> None:
        """Stop, then start again on the same port."""
        await self.stop()
        await self.start()

    async def _answers_ping(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            if self.password:
                writer.write(f"AUTH {self.password}\r\n".encode())
            writer.write(b"PING\r\n")
            await writer.drain()
            if self.password:
                await reader.readline()
            return (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
