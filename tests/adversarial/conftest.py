"""Fixtures: `make_target` starts a gateway in front of a recording upstream behind a tap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer

from tests.adversarial.support import BASE_CONFIG, Recorder, Tap, Target

MakeTarget = Callable[..., Awaitable[Target]]


@pytest.fixture
async def make_target(start_gateway) -> AsyncIterator[MakeTarget]:
    """Start a `Target`: ``config`` is gateway TOML with ``@URL@`` and ``@IDLE@`` holes."""
    taps: list[Tap] = []
    servers: list[TestServer] = []

    async def make(config: str = BASE_CONFIG, extra: str = "", idle: str = "2s") -> Target:
        recorder = Recorder()
        # The recorder keeps bodies as they were sent: it decompresses nothing; and
        # it takes any head the gateway may pass on (aiohttp's own limit is 8 KiB).
        server = TestServer(recorder.app, host="127.0.0.1")
        await server.start_server(
            auto_decompress=False, max_line_size=1 << 20, max_field_size=1 << 20
        )
        servers.append(server)
        assert server.port is not None
        tap = await Tap(server.port).start()
        taps.append(tap)
        text = (config + extra).replace("@URL@", tap.url).replace("@IDLE@", idle)
        gateway = await start_gateway(text)
        return Target(gateway.service, recorder, tap)

    yield make
    for tap in taps:
        await tap.stop()
    for server in servers:
        await server.close()


@pytest.fixture
async def target(make_target) -> Target:
    """The base gateway: one route, ``/public/{rest*}``, to the recording upstream."""
    return await make_target()
