"""Fixtures for plugin tests that need a real Redis server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.redis_server import REDIS_SERVER, RedisServer

StartRedis = Callable[..., Awaitable[RedisServer]]


@pytest.fixture
async def start_redis() -> AsyncIterator[StartRedis]:
    """Start private ``redis-server`` processes (``password=`` optional); stop them after.

    Skips the test when the ``redis-server`` binary is not installed.
    """
    if REDIS_SERVER is None:
        if os.environ.get("CI"):  # CI installs it: a skip there would hide a broken set-up
            pytest.fail("redis-server is not installed, but CI must run the Redis tests")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    servers: list[RedisServer] = []

    async def start(password: str | None = None) -> RedisServer:
        server = RedisServer(password)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def redis_server(start_redis: StartRedis) -> RedisServer:
    """One private Redis server for the test."""
    return await start_redis()
