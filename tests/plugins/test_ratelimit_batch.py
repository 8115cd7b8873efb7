"""`ScriptBatcher` on a real Redis: one tick's calls in one pipeline, each reply to its
call, script errors as that call's error, and Redis forgetting its scripts or restarting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway_plugins.ratelimit.batch import ScriptBatcher
from tests.redis_server import RedisServer

SCRIPTS = {
    # Every key and argument back, as Redis received them.
    "echo": "return {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}",
    "fail": "return redis.error_reply('ERR refused by the script')",
    # How many commands this connection has sent, by its own count.
    "count": "return redis.call('INCR', KEYS[1])",
}


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    made = Redis.from_url(redis_server.url)
    yield made
    await made.aclose()


@pytest.fixture
async def batcher(client: Redis) -> AsyncIterator[ScriptBatcher]:
    made = ScriptBatcher(client, SCRIPTS, connections=2)
    yield made
    await made.close()


async def test_each_call_gets_its_own_reply_with_its_arguments_as_sent(
    batcher: ScriptBatcher,
) -> None:
    calls = [batcher.run("echo", [f"k:{i}"], [f"s{i}", i, i / 4]) for i in range(50)]
    replies = await asyncio.gather(*calls)
    assert replies == [
        [f"k:{i}".encode(), f"s{i}".encode(), b"%d" % i, repr(i / 4).encode()] for i in range(50)
    ]


async def test_one_tick_of_calls_is_one_pipeline_on_one_connection(
    batcher: ScriptBatcher, client: Redis
) -> None:
    await batcher.run("count", ["warm"], [])  # the scripts loaded, one connection made
    await client.config_resetstat()
    await asyncio.gather(*(batcher.run("count", ["n"], []) for _ in range(30)))
    # 30 EVALSHA, each once, all on the connection the batcher already had.
    assert int(await client.get("n")) == 30
    assert (await client.info("commandstats"))["cmdstat_evalsha"]["calls"] == 30
    assert int((await client.info("stats"))["total_connections_received"]) == 0


async def test_a_script_error_fails_its_call_only(batcher: ScriptBatcher) -> None:
    ok, failed, also_ok = await asyncio.gather(
        batcher.run("echo", ["a"], ["x", 1, 2]),
        batcher.run("fail", ["b"], []),
        batcher.run("echo", ["c"], ["y", 3, 4]),
        return_exceptions=True,
    )
    assert ok == [b"a", b"x", b"1", b"2"]
    assert isinstance(failed, ResponseError) and "refused by the script" in str(failed)
    assert also_ok == [b"c", b"y", b"3", b"4"]


async def test_scripts_redis_forgot_are_loaded_again(batcher: ScriptBatcher, client: Redis) -> None:
    assert await batcher.run("echo", ["a"], ["x", 1, 2]) == [b"a", b"x", b"1", b"2"]
    await client.script_flush()
    assert await batcher.run("echo", ["b"], ["y", 3, 4]) == [b"b", b"y", b"3", b"4"]


async def test_a_restarted_redis_is_reached_again_on_the_next_call(
    batcher: ScriptBatcher, redis_server: RedisServer
) -> None:
    assert await batcher.run("count", ["n"], []) == 1
    await redis_server.restart()  # the batcher's connection is now closed by the server
    # Tried once more on a fresh connection (and the scripts loaded again): Redis
    # forgot everything, so the count starts over.
    assert await batcher.run("count", ["n"], []) == 1


async def test_a_redis_that_is_gone_fails_the_calls_and_they_work_once_it_is_back(
    batcher: ScriptBatcher, redis_server: RedisServer
) -> None:
    await redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await batcher.run("count", ["n"], [])
    await redis_server.start()
    assert await batcher.run("count", ["n"], []) == 1


async def test_an_argument_of_another_type_is_refused_before_anything_is_sent(
    batcher: ScriptBatcher,
) -> None:
    with pytest.raises(TypeError, match="bool"):
        await batcher.run("echo", ["a"], [True, 1, 2])
