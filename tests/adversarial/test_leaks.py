"""Clients that hang up at any moment of an answer, small or large.

Every exit path of a proxied exchange must release or close its upstream
connection exactly once.  Clients abort (FIN or RST) at random points while an
answer arrives in two parts; afterwards the gateway's file descriptors must be
back to their baseline and every connection slot of the upstream (``max_connections``
is 2 here, so one leaked slot shows) must serve a request again.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from tests.adversarial.rawhttp import RawConnection, ScriptedUpstream
from tests.adversarial.support import BASE_CONFIG, request

SLOTS = 2
CONFIG = BASE_CONFIG.replace(
    'connect_timeout = "1s"', f'connect_timeout = "1s"\nmax_connections = {SLOTS}'
)
ABORTS = 24  # per answer size
BOUND = 5.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def two_parts(size: int):
    """An answer of ``size`` bytes: its head and a quarter, then the rest 20 ms later."""
    body = b"x" * size

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        writer.write(head + b"Content-Length: %d\r\n\r\n" % size + body[: size // 4])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(body[size // 4 :])
        await writer.drain()
        await reader.read()  # until the gateway hangs up

    return script


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts fds in /proc")
@pytest.mark.parametrize("size", [1_000, 30_000, 200_000], ids=["1kB", "30kB", "200kB"])
async def test_clients_aborting_anywhere_leave_no_connection_behind(start_gateway, size):
    async with ScriptedUpstream(two_parts(size)) as upstream:
        gateway = await start_gateway(CONFIG.replace("@URL@", upstream.url).replace("@IDLE@", "2s"))
        port = gateway.service.port
        baseline = open_fds()
        rng = random.Random(size)
        for i in range(ABORTS):
            connection = await RawConnection.open(port)
            await connection.send(request("GET", f"/public/{i}"))
            await asyncio.sleep(rng.uniform(0, 0.04))
            if i % 2:
                connection.reset()
            else:
                connection.close()
        assert await gateway.service.runtime.wait_idle(BOUND)

        # Every slot serves again: SLOTS requests at once all get their whole answer.
        async def fetch(i: int) -> tuple[int, int]:
            async with await RawConnection.open(port) as connection:
                await connection.send(request("GET", f"/public/after-{i}"))
                answer = await connection.read_response(BOUND)
            return answer.status, len(answer.body)

        assert await asyncio.gather(*(fetch(i) for i in range(SLOTS))) == [(200, size)] * SLOTS

        # And no descriptor is left open, on either side of the gateway.
        for _ in range(int(BOUND / 0.02)):  # (closing takes a loop turn or two)
            if open_fds() <= baseline:
                break
            await asyncio.sleep(0.02)
        assert open_fds() <= baseline
