"""Fixtures for plugin tests that need a real Redis or PostgreSQL server."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from tests.postgres_server import POSTGRES_BIN, PostgresServer
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (``initdb`` takes seconds); each test that
    uses it gets a database of its own from `postgres_url`.

    Skips the test when PostgreSQL is not installed.
    """
    if POSTGRES_BIN is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed, but CI must run the PostgreSQL tests")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer().start()
    yield server
    server.stop()


_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database(f"test_{next(_databases)}")
