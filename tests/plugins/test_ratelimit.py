"""``ratelimit`` with the in-process store, in a real gateway and as a plain object.

Periods are long (hours, days) so that the real clock never matters here; exact
counts over time are proven on an injected clock in ``test_ratelimit_memory``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.api import Exchange, Identity, Plugin, SSEEvent, Usage
from gateway.config import RouteConfig, parse_config, structure
from gateway.errors import TooManyRequests
from gateway.keys import new_key
from gateway.registry import installed_plugins
from gateway.runtime import build_runtime
from gateway.server import Service, make_socket
from gateway_plugins.ratelimit.memory_store import MemoryStore
from gateway_plugins.ratelimit.plugin import RateLimit
from tests.upstreams import Upstream


def rules_toml(*rules: dict[str, Any]) -> str:
    """``[[plugins.ratelimit.rules]]`` tables from dicts."""
    return "\n".join(
        "[[plugins.ratelimit.rules]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in r.items())
        for r in rules
    )


def config(url: str, *rules: dict[str, Any], pipeline: str = '["ratelimit"]') -> str:
    return f"""
pipeline = {pipeline}
[plugins.ratelimit]
store = "memory"
{rules_toml(*rules)}
[upstreams.up]
url = "{url}"
[routes.limited]
path = "/limited/{{rest*}}"
upstream = "up"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
"""


@pytest.fixture
async def upstream(serve_app) -> tuple[Upstream, str]:
    fake = Upstream()
    return fake, await serve_app(fake.app)


async def get(gateway: Any, path: str, **headers: str) -> tuple[int, CIMultiDict[str], Any]:
    async with gateway.request("GET", path, headers=headers) as response:
        body = await response.read()
        return response.status, CIMultiDict(response.headers), body


# --- answers and headers --------------------------------------------------------------


async def test_headers_on_success_and_a_429_naming_the_rule(start_gateway, upstream):
    fake, url = upstream
    rule = {"name": "per-ip", "key": "client_ip", "rate": "2/h", "burst": 2}
    gateway = await start_gateway(config(url, rule))
    first, second, third = [await get(gateway, "/x") for _ in range(3)]
    assert first[0] == second[0] == 200
    assert [
        (h["X-RateLimit-Limit"], h["X-RateLimit-Remaining"]) for _, h, _ in (first, second)
    ] == [
        ("2", "1"),
        ("2", "0"),
    ]
    assert first[1]["X-RateLimit-Reset"] == "1800"  # one interval until the bucket is full
    assert second[1]["X-RateLimit-Reset"] == "3600"
    status, headers, body = third
    assert status == 429
    assert headers["Retry-After"] == "1800"
    assert headers["X-RateLimit-Limit"] == "2"
    assert headers["X-RateLimit-Remaining"] == "0"
    error = json.loads(body)["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limited"
    assert "'per-ip'" in error["message"]
    assert "2 requests per hour, burst 2" in error["message"]
    assert len(fake.requests) == 2  # the rejected request never reached the upstream


async def test_routes_restrict_a_rule(start_gateway, upstream):
    _, url = upstream
    rule = {"name": "only-limited", "key": "client_ip", "rate": "1/h", "routes": ["limited"]}
    gateway = await start_gateway(config(url, rule))
    for _ in range(3):
        status, headers, _ = await get(gateway, "/free")
        assert status == 200
        assert "X-RateLimit-Limit" not in headers
    assert (await get(gateway, "/limited/a"))[0] == 200
    assert (await get(gateway, "/limited/b"))[0] == 429


async def test_the_headers_describe_the_first_rule_that_applies(start_gateway, upstream):
    _, url = upstream
    rate = {"name": "rate", "key": "client_ip", "rate": "10/h", "burst": 10}
    quota = {"name": "quota", "key": "client_ip", "requests": 2, "period": "day"}
    gateway = await start_gateway(config(url, rate, quota))
    _, headers, _ = await get(gateway, "/x")
    # The rate is listed first: its 10 and 9 left, though the quota has less left.
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("10", "9")
    await get(gateway, "/x")
    status, headers, body = await get(gateway, "/x")
    assert status == 429  # a refusal describes the rule that refused
    assert "'quota'" in json.loads(body)["error"]["message"]
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("2", "0")
    assert 1 <= int(headers["Retry-After"]) <= 86400  # until midnight UTC


async def test_answers_refused_before_the_limits_carry_no_limit_headers(start_gateway, upstream):
    # As with Kong and Envoy, the limits run after authentication: a client that
    # is not authenticated has no counter, so its 401 reports none.
    _, url = upstream
    key, digest = new_key()
    gateway = await start_gateway(f"""
pipeline = ["auth", "ratelimit"]
[plugins.auth]
mode = "keys"
keys.alice = {{ sha256 = "{digest}" }}
credentials.up = [{{ name = "c1", token = "upstream-secret" }}]
[plugins.ratelimit]
store = "memory"
{rules_toml({"name": "per-key", "key": "identity", "rate": "10/h", "burst": 10})}
[upstreams.up]
url = "{url}"
[routes.all]
path = "/{{rest*}}"
upstream = "up"
""")
    status, headers, _ = await get(gateway, "/x", Authorization="Bearer not-a-key")
    assert status == 401
    assert not [name for name in headers if name.lower().startswith("x-ratelimit")]
    status, headers, _ = await get(gateway, "/x", Authorization=f"Bearer {key}")
    assert (status, headers["X-RateLimit-Remaining"]) == (200, "9")


# --- identity, team and the fallback to the client address ---------------------------


class FakeAuth(Plugin):
    """Stands in for ``auth``: the identity is ``X-Test-User``, its team ``X-Test-Team``."""

    async def on_request(self, ex: Exchange) -> None:
        user = ex.request.headers.get("X-Test-User")
        if user is not None:
            ex.identity = Identity(user, team=ex.request.headers.get("X-Test-Team"))


@pytest.fixture
async def with_fake_auth() -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Serve a config whose pipeline may name ``fake_auth``; return the gateway's URL."""
    services: list[Service] = []

    async def start(text: str) -> str:
        fake = importlib.metadata.EntryPoint(
            name="fake_auth", value=f"{__name__}:FakeAuth", group="gateway.plugins"
        )
        runtime = build_runtime(
            parse_config(text, "test.toml", env={}),
            installed={**installed_plugins(), "fake_auth": fake},
        )
        service = await Service.create(runtime)
        await service.start(make_socket("127.0.0.1", 0))
        services.append(service)
        return f"http://127.0.0.1:{service.port}"

    yield start
    for service in services:
        await service.stop(1)


async def statuses(url: str, *users: tuple[str | None, str | None]) -> list[int]:
    """The status of one request per (user, team), in order."""
    found = []
    async with aiohttp.ClientSession() as session:
        for user, team in users:
            headers = {"X-Test-User": user} if user else {}
            if team:
                headers["X-Test-Team"] = team
            async with session.get(url + "/x", headers=headers) as response:
                found.append(response.status)
    return found


async def test_identity_rules_count_per_identity_and_fall_back_to_the_address(
    with_fake_auth, upstream
):
    _, url = upstream
    rule = {"name": "per-key", "key": "identity", "rate": "1/h"}
    gateway = await with_fake_auth(config(url, rule, pipeline='["fake_auth", "ratelimit"]'))
    seen = await statuses(
        gateway, ("alice", None), ("alice", None), ("bob", None), (None, None), (None, None)
    )
    assert seen == [200, 429, 200, 200, 429]


async def test_team_rules_count_per_team_else_per_identity(with_fake_auth, upstream):
    _, url = upstream
    rule = {"name": "per-team", "key": "team", "rate": "1/h"}
    gateway = await with_fake_auth(config(url, rule, pipeline='["fake_auth", "ratelimit"]'))
    seen = await statuses(
        gateway,
        ("alice", "lab"),
        ("bob", "lab"),  # same team: same counter
        ("carol", None),  # no team: her own counter
        ("dave", None),
        ("carol", None),
        (None, None),  # no identity: the address
    )
    assert seen == [200, 429, 200, 200, 429, 200]


# --- concurrency ----------------------------------------------------------------------


async def test_a_slot_is_freed_when_the_stream_ends(start_gateway, upstream):
    fake, url = upstream
    rule = {"name": "streams", "key": "client_ip", "concurrency": 1}
    gateway = await start_gateway(config(url, rule))
    # One connection for the stream and the request after it: the gateway handles
    # the second only once the first (its on_complete included) is over.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        async with session.get(gateway.url + "/sse") as stream:
            assert await stream.content.readuntil(b"\n\n") == b"data: first\n\n"
            status, headers, body = await get(gateway, "/other")
            assert status == 429
            assert "'streams'" in json.loads(body)["error"]["message"]
            assert headers["Retry-After"] == "1"
            fake.gate.set()
            assert (await stream.read()).endswith(b"data: [DONE]\n\n")
        async with session.get(gateway.url + "/after") as response:
            assert response.status == 200
            assert response.headers["X-RateLimit-Remaining"] == "0"


async def test_a_slot_is_freed_when_the_client_disconnects(start_gateway, upstream):
    fake, url = upstream
    rule = {"name": "streams", "key": "client_ip", "concurrency": 1}
    gateway = await start_gateway(config(url, rule))
    async with aiohttp.ClientSession() as session:
        response = await session.get(gateway.url + "/heartbeat")
        await response.content.readuntil(b"\n\n")
        assert (await get(gateway, "/busy"))[0] == 429
        response.close()  # drop the connection mid-stream
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    assert await eventually_admitted(gateway)


async def test_a_slot_is_freed_when_the_upstream_fails(start_gateway):
    rule = {"name": "streams", "key": "client_ip", "concurrency": 1}
    gateway = await start_gateway(config("http://127.0.0.1:9", rule))  # nothing listens
    for _ in range(3):
        status, headers, _ = await get(gateway, "/x")
        assert status == 502
        assert headers["X-RateLimit-Remaining"] == "0"


async def eventually_admitted(gateway: Any) -> bool:
    """Whether a request is admitted within a few seconds (a disconnect settles on its own)."""
    for _ in range(100):
        if (await get(gateway, "/x"))[0] == 200:
            return True
        await asyncio.sleep(0.05)
    return False


# --- as a plain object ----------------------------------------------------------------


def make_plugin(*rules: dict[str, Any], store: Any = None) -> RateLimit:
    """A plugin on an in-process store whose clock stands still."""
    plugin_config, problems = structure({"rules": list(rules)}, RateLimit.Config, "$")
    assert problems == []
    return RateLimit(plugin_config, store=store or MemoryStore(lambda: 1_700_000_000.0))


def exchange() -> Exchange:
    return Exchange(
        request=make_mocked_request("POST", "/v1/chat/completions"),
        route_name="openai",
        route=RouteConfig(path="/v1/{rest*}"),
        upstream=None,
        path_params={},
        path="/v1/chat/completions",
        upstream_url=None,
        upstream_headers=CIMultiDict(),
        client_ip="198.51.100.1",
        request_id="rid",
    )


async def admitted_headers(plugin: RateLimit) -> CIMultiDict[str]:
    """Run a request through ``on_request`` and ``on_response``; return the headers added."""
    ex = exchange()
    await plugin.on_request(ex)
    ex.status = 200
    ex.response_headers = CIMultiDict()
    await plugin.on_response(ex)
    return ex.response_headers


async def test_the_headers_do_not_alternate_between_rules_over_time():
    now = [1_700_000_000.0]
    store = MemoryStore(lambda: now[0])
    plugin = make_plugin(
        {"name": "rate", "key": "client_ip", "rate": "1/s", "burst": 2},
        {"name": "quota", "key": "client_ip", "requests": 4, "period": "day"},
        store=store,
    )
    limits = []
    for wait in (0.0, 2.0, 0.0, 2.0):  # each rule in turn has the smaller share left
        now[0] += wait
        limits.append((await admitted_headers(plugin))["X-RateLimit-Limit"])
    assert limits == ["2", "2", "2", "2"]


async def test_a_rejection_is_recorded_for_metrics_and_charges_nothing():
    plugin = make_plugin(
        {"name": "rate", "key": "client_ip", "rate": "1/h", "burst": 2},
        {"name": "slots", "key": "client_ip", "concurrency": 1},
    )
    first = exchange()
    await plugin.on_request(first)
    rejected = exchange()
    with pytest.raises(TooManyRequests) as caught:
        await plugin.on_request(rejected)
    assert rejected.limited_by == "slots"
    assert caught.value.headers["Retry-After"] == "1"
    assert "'slots'" in caught.value.message
    await plugin.on_complete(rejected, caught.value)  # frees nothing: it took nothing
    await plugin.on_complete(first, None)
    # The rejected request did not use the rate's second request either.
    headers = await admitted_headers(plugin)
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("2", "0")


async def test_exchange_usage_wins_over_the_upstream_usage():
    plugin = make_plugin({"name": "tokens", "key": "client_ip", "tokens": 100, "period": "day"})
    ex = exchange()
    await plugin.on_request(ex)
    ex.status = 200
    ex.response_headers = CIMultiDict({"Content-Type": "text/event-stream"})
    await plugin.on_response(ex)
    event = SSEEvent(data=json.dumps({"choices": [], "usage": {"total_tokens": 50}}))
    assert await plugin.on_event(ex, event) is event  # passed through unchanged
    ex.usage = Usage(prompt_tokens=3, completion_tokens=4)  # another plugin's count
    await plugin.on_complete(ex, None)
    assert ex.usage == Usage(prompt_tokens=3, completion_tokens=4)  # left as it was
    assert (await admitted_headers(plugin))["X-RateLimit-Remaining"] == "93"


async def test_the_upstream_usage_it_metered_fills_exchange_usage():
    plugin = make_plugin({"name": "tokens", "key": "client_ip", "tokens": 100, "period": "day"})
    ex = exchange()
    await plugin.on_request(ex)
    ex.status = ex.upstream_status = 200
    ex.response_headers = CIMultiDict({"Content-Type": "text/event-stream"})
    await plugin.on_response(ex)
    usage = {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}
    await plugin.on_event(ex, SSEEvent(data=json.dumps({"choices": [], "usage": usage})))
    await plugin.on_complete(ex, None)
    assert ex.usage == Usage(prompt_tokens=20, completion_tokens=30, estimated=False)
    assert (await admitted_headers(plugin))["X-RateLimit-Remaining"] == "50"


async def test_a_request_is_settled_exactly_once():
    plugin = make_plugin(
        {"name": "tokens", "key": "client_ip", "tokens": 100, "period": "day"},
        {"name": "slots", "key": "client_ip", "concurrency": 2},
    )
    done, held = exchange(), exchange()
    await plugin.on_request(done)
    await plugin.on_request(held)
    done.usage = Usage(completion_tokens=10)
    await plugin.on_complete(done, None)
    await plugin.on_complete(done, None)
    # One slot freed, not two: one more request fits, the next does not.
    await plugin.on_request(exchange())
    with pytest.raises(TooManyRequests):
        await plugin.on_request(exchange())
    plugin_tokens = make_plugin(
        {"name": "tokens", "key": "client_ip", "tokens": 100, "period": "day"}, store=plugin.store
    )
    assert (await admitted_headers(plugin_tokens))["X-RateLimit-Remaining"] == "90"
