"""The ``routing`` plugin through a real gateway, in front of three real model upstreams.

Clients are the official ``openai`` SDK (streaming and not) and raw HTTP.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import openai
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from structlog.testing import capture_logs

from gateway.keys import key_digest
from gateway.testing.pytest_plugin import RunningGateway, StartGateway
from gateway.testing.recorder import Recorder
from gateway_plugins.routing import DEPLOYMENT_HEADER, Routing
from tests.model_upstreams import AZURE_KEY, FlakyUpstream, azure_upstream, openai_upstream
from tests.plugins.conftest import StartRedis
from tests.plugins.test_metrics import parse, value

ALICE, BOB = "sk-gw-alice", "sk-gw-bob"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


@attrs.define
class Upstreams:
    openai_url: str
    azure_url: str
    flaky: FlakyUpstream
    openai: Recorder
    azure: Recorder


@pytest.fixture
async def upstreams(
    serve_app: Callable[[web.Application], Awaitable[str]],
) -> AsyncIterator[Upstreams]:
    openai_seen, azure_seen = Recorder(), Recorder()
    openai_url = await serve_app(openai_upstream("openai", openai_seen))
    azure_url = await serve_app(azure_upstream("azure", azure_seen))
    flaky = await FlakyUpstream().start()
    yield Upstreams(openai_url, azure_url, flaky, openai_seen, azure_seen)
    await flaky.stop()


def config(
    up: Upstreams, max_attempts: int = 3, auth: str = 'mode = "passthrough"', store: str = ""
) -> str:
    return f"""
pipeline = ["access_log", "auth", "routing"]

[plugins.auth]
{auth}

[plugins.routing]
max_attempts = {max_attempts}
{store}

[plugins.routing.outlier_detection]
consecutive_failures = 2
base_ejection = "30s"

[plugins.routing.upstreams.azure]
kind = "azure"
api_version = "2024-10-21"
api_key = "{AZURE_KEY}"

[plugins.routing.models."gpt-4o"]
[[plugins.routing.models."gpt-4o".deployments]]
upstream = "openai"
model = "gpt-4o-2024-08-06"

[plugins.routing.models."azure-4o"]
[[plugins.routing.models."azure-4o".deployments]]
upstream = "azure"
model = "my-4o-deployment"

[plugins.routing.models."spread"]
[[plugins.routing.models."spread".deployments]]
upstream = "openai"
model = "gpt-4o"
weight = 3
[[plugins.routing.models."spread".deployments]]
upstream = "azure"
model = "spread-az"
weight = 1

[plugins.routing.models."flaky-4o"]
fallbacks = ["azure-4o"]
[[plugins.routing.models."flaky-4o".deployments]]
upstream = "flaky"
model = "flaky-model"

[plugins.routing.models."limited"]
[[plugins.routing.models."limited".deployments]]
upstream = "openai"
model = "gpt-4o-mini"
rpm = 2

[plugins.routing.models."tpm-limited"]
[[plugins.routing.models."tpm-limited".deployments]]
upstream = "openai"
model = "gpt-4o-mini"
name = "openai-tpm"
tpm = 5

[plugins.routing.upstreams.flaky_azure]
kind = "azure"
api_key = "flaky-azure-key"

[plugins.routing.models."az-flaky"]
fallbacks = ["gpt-4o"]
[[plugins.routing.models."az-flaky".deployments]]
upstream = "flaky_azure"
model = "dep"

[plugins.routing.models."text-*"]
[[plugins.routing.models."text-*".deployments]]
upstream = "openai"

[upstreams.openai]
url = "{up.openai_url}"
[upstreams.azure]
url = "{up.azure_url}"
[upstreams.flaky]
url = "{up.flaky.url}"
idle_timeout = "1s"
[upstreams.flaky_azure]
url = "{up.flaky.url}"

[routes.v1]
path = "/v1/{{rest*}}"
"""


KEYS = f"""
mode = "keys"
[plugins.auth.keys.alice]
sha256 = "{key_digest(ALICE)}"
[plugins.auth.keys.bob]
sha256 = "{key_digest(BOB)}"
models = ["gpt-4o", "flaky-4o"]
"""


def routing_plugin(gateway: RunningGateway) -> Routing:
    return next(p for p in gateway.service.runtime.plugins if isinstance(p, Routing))


def sdk(gateway: RunningGateway, key: str = "sk-client") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


async def post(
    gateway: RunningGateway, path: str, body: dict[str, Any], key: str = "sk-client"
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    headers = {"Authorization": f"Bearer {key}"}
    async with gateway.request("POST", path, json=body, headers=headers) as response:
        return response.status, response.headers, await response.read()


async def test_routes_by_model_and_rewrites_it(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams))
    client = sdk(gateway)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("You said: hello")  # type: ignore[union-attr]
    assert raw.headers[DEPLOYMENT_HEADER] == "openai/gpt-4o-2024-08-06"
    seen = upstreams.openai.last
    assert seen.path == "/v1/chat/completions"
    assert seen.json_body["model"] == "gpt-4o-2024-08-06"
    assert seen.headers["Authorization"] == "Bearer sk-client"  # passthrough kept it
    await client.close()


async def test_azure_deployment_streaming_and_not(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams))
    client = sdk(gateway)
    whole = await client.chat.completions.create(
        model="azure-4o", messages=[{"role": "user", "content": "hi"}]
    )
    assert whole.choices[0].message.content.startswith("You said: hi")  # type: ignore[union-attr]
    stream = await client.chat.completions.create(
        model="azure-4o", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    text = "".join(
        [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    )
    assert text.startswith("You said: streamed")
    for seen in upstreams.azure.requests:
        assert seen.path == "/openai/deployments/my-4o-deployment/chat/completions"
        assert seen.query == {"api-version": "2024-10-21"}
        assert seen.headers["api-key"] == AZURE_KEY
        assert "Authorization" not in seen.headers  # the client's token stays here
        assert seen.json_body["model"] == "my-4o-deployment"
    assert len(upstreams.azure.requests) == 2
    assert upstreams.openai.requests == []
    await client.close()


@pytest.mark.parametrize(
    ("path", "body", "openai_path", "azure_path"),
    [
        (
            "/v1/completions",
            {"prompt": "p"},
            "/v1/completions",
            "/openai/deployments/my-4o-deployment/completions",
        ),
        (
            "/v1/embeddings",
            {"input": "x"},
            "/v1/embeddings",
            "/openai/deployments/my-4o-deployment/embeddings",
        ),
        ("/v1/responses", {"input": "x"}, "/v1/responses", "/openai/responses"),
    ],
)
async def test_every_routed_endpoint(
    start_gateway: StartGateway,
    upstreams: Upstreams,
    path: str,
    body: dict[str, Any],
    openai_path: str,
    azure_path: str,
) -> None:
    gateway = await start_gateway(config(upstreams))
    status, headers, _ = await post(gateway, path, {**body, "model": "gpt-4o"})
    assert (status, headers[DEPLOYMENT_HEADER]) == (200, "openai/gpt-4o-2024-08-06")
    assert upstreams.openai.last.path == openai_path
    assert upstreams.openai.last.json_body["model"] == "gpt-4o-2024-08-06"
    status, headers, _ = await post(gateway, path, {**body, "model": "azure-4o"})
    assert (status, headers[DEPLOYMENT_HEADER]) == (200, "azure/my-4o-deployment")
    assert upstreams.azure.last.path == azure_path
    assert upstreams.azure.last.json_body["model"] == "my-4o-deployment"


async def test_wildcard_keeps_the_asked_name(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams))
    status, headers, _ = await post(
        gateway, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}
    )
    assert (status, headers[DEPLOYMENT_HEADER]) == (200, "openai/*")
    assert upstreams.openai.last.json_body["model"] == "text-embedding-3-small"


async def test_unknown_model_is_404_before_any_upstream(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams))
    client = sdk(gateway)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(
            model="gpt-5-nonexistent", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.code == "model_not_found"
    status, _, body = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "x" * 100_000})
    assert status == 404 and len(body) < 1000  # the name is not echoed whole
    status, _, body = await post(gateway, "/v1/chat/completions", {"messages": []})
    assert status == 400 and b"model" in body
    assert upstreams.openai.requests == upstreams.azure.requests == []
    assert upstreams.flaky.recorder.requests == []
    await client.close()


async def test_weights_with_a_fixed_seed(start_gateway: StartGateway, upstreams: Upstreams) -> None:
    gateway = await start_gateway(config(upstreams))
    routing_plugin(gateway).rng = random.Random(2024)
    served: Counter[str] = Counter()
    for _ in range(200):
        status, headers, _ = await post(
            gateway, "/v1/chat/completions", {**CHAT, "model": "spread"}
        )
        assert status == 200
        served[headers[DEPLOYMENT_HEADER]] += 1
    # Weights 3:1 -> 150 expected; 3 sigma is about 18, and the seed fixes the draw.
    assert 132 <= served["openai/gpt-4o"] <= 168
    assert served["openai/gpt-4o"] + served["azure/spread-az"] == 200


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_falls_back_on_5xx_and_429(
    start_gateway: StartGateway, upstreams: Upstreams, status: int
) -> None:
    gateway = await start_gateway(config(upstreams))
    upstreams.flaky.fail("status", status)
    client = sdk(gateway)
    raw = await client.chat.completions.with_raw_response.create(
        model="flaky-4o", messages=[{"role": "user", "content": "again"}]
    )
    assert raw.headers[DEPLOYMENT_HEADER] == "azure/my-4o-deployment"
    assert raw.parse().choices[0].message.content.startswith("You said: again")  # type: ignore[union-attr]
    # The same body went to both, each with its own model name.
    assert upstreams.flaky.recorder.last.json_body["model"] == "flaky-model"
    assert (
        upstreams.azure.last.json_body["messages"]
        == upstreams.flaky.recorder.last.json_body["messages"]
    )
    await client.close()


async def test_the_last_failure_passes_through_when_nothing_is_left(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams, max_attempts=1))
    upstreams.flaky.fail("status", 503)
    status, headers, body = await post(
        gateway, "/v1/chat/completions", {**CHAT, "model": "flaky-4o"}
    )
    assert (status, headers[DEPLOYMENT_HEADER]) == (503, "flaky/flaky-model")
    assert b"overloaded" in body  # the upstream's own answer
    assert upstreams.azure.requests == []


async def test_never_after_the_first_byte(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams))
    upstreams.flaky.fail("midstream")
    client = sdk(gateway)
    stream = await client.chat.completions.create(
        model="flaky-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert upstreams.azure.requests == []  # no second answer after bytes were sent
    assert len(upstreams.flaky.recorder.requests) == 1
    await client.close()


async def test_outlier_ejection_and_return(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams))
    now = [1000.0]
    routing_plugin(gateway).outliers.clock = lambda: now[0]
    upstreams.flaky.fail("status", 500)
    for _ in range(2):  # two failures in a row eject it
        status, headers, _ = await post(
            gateway, "/v1/chat/completions", {**CHAT, "model": "flaky-4o"}
        )
        assert (status, headers[DEPLOYMENT_HEADER]) == (200, "azure/my-4o-deployment")
    assert len(upstreams.flaky.recorder.requests) == 2
    upstreams.flaky.fail("ok")
    status, headers, _ = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "flaky-4o"})
    assert headers[DEPLOYMENT_HEADER] == "azure/my-4o-deployment"  # set aside: not called
    assert len(upstreams.flaky.recorder.requests) == 2
    statuses = gateway.context.statuses()  # what an admin page reads
    deployments = statuses["routing"]["deployments"]
    assert deployments["flaky/flaky-model"]["ejected_for"] == 30.0
    assert deployments["azure/my-4o-deployment"]["ejected_for"] == 0.0
    assert AZURE_KEY not in repr(statuses)
    now[0] += 30.0  # the ejection is over: it comes back on its own
    status, headers, _ = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "flaky-4o"})
    assert (status, headers[DEPLOYMENT_HEADER]) == (200, "flaky/flaky-model")


async def test_keys_models_restrictions_and_models_list(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams, auth=KEYS))
    bob, alice = sdk(gateway, BOB), sdk(gateway, ALICE)
    assert [m.id async for m in bob.models.list()] == ["gpt-4o", "flaky-4o"]
    listed = [m.id async for m in alice.models.list()]
    assert listed == [
        "gpt-4o",
        "azure-4o",
        "spread",
        "flaky-4o",
        "limited",
        "tpm-limited",
        "az-flaky",
    ]  # wildcards are not listed
    assert (await bob.models.retrieve("gpt-4o")).id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        await bob.models.retrieve("azure-4o")  # bob may not use it: not found for him
    with pytest.raises(openai.PermissionDeniedError):
        await bob.chat.completions.create(
            model="azure-4o", messages=[{"role": "user", "content": "x"}]
        )
    # Bob may use flaky-4o, whose fallback he could not ask for by name: the operator's choice.
    upstreams.flaky.fail("status", 500)
    answer = await bob.chat.completions.create(
        model="flaky-4o", messages=[{"role": "user", "content": "y"}]
    )
    assert answer.choices[0].message.content.startswith("You said: y")  # type: ignore[union-attr]
    assert upstreams.azure.last.headers["api-key"] == AZURE_KEY
    assert upstreams.openai.requests == []
    await bob.close()
    await alice.close()


@pytest.mark.parametrize("failure", ["refuse", "reset", "hang"])
async def test_falls_back_when_unreachable_or_silent(
    start_gateway: StartGateway, upstreams: Upstreams, failure: str
) -> None:
    gateway = await start_gateway(config(upstreams))
    if failure == "refuse":
        await upstreams.flaky.refuse()
    else:
        upstreams.flaky.fail(failure)  # type: ignore[arg-type]
    client = sdk(gateway)
    stream = await client.chat.completions.with_raw_response.create(
        model="flaky-4o", messages=[{"role": "user", "content": "still here"}], stream=True
    )
    assert stream.headers[DEPLOYMENT_HEADER] == "azure/my-4o-deployment"
    chunks = [chunk async for chunk in stream.parse() if chunk.choices]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text.startswith("You said: still here")
    # Refused: nothing reached it; reset or silent (idle_timeout 1s): it got the request.
    assert len(upstreams.flaky.recorder.requests) == (0 if failure == "refuse" else 1)
    assert upstreams.azure.last.json_body["stream"] is True
    await client.close()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_deployment_rpm_limit(
    start_gateway: StartGateway, upstreams: Upstreams, store: str, start_redis: StartRedis
) -> None:
    settings = 'store = "memory"'
    if store == "redis":
        redis = await start_redis()
        settings = f'store = "redis"\nredis_url = "{redis.url}"'
    gateway = await start_gateway(config(upstreams, store=settings))
    for _ in range(2):
        status, _, _ = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "limited"})
        assert status == 200
    status, headers, body = await post(
        gateway, "/v1/chat/completions", {**CHAT, "model": "limited"}
    )
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert b"at its limit" in body
    assert len(upstreams.openai.requests) == 2  # the third never left the gateway


async def test_the_access_log_and_metrics_name_the_deployment_that_answered(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    text = config(upstreams).replace(
        'pipeline = ["access_log", "auth", "routing"]',
        'pipeline = ["access_log", "metrics", "auth", "routing"]',
    )
    gateway = await start_gateway(text + '[routes.metrics]\npath = "/metrics"\n')
    upstreams.flaky.fail("status", 503)
    with capture_logs() as logs:
        status, _, _ = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "flaky-4o"})
    assert status == 200
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["deployment"] == "azure/my-4o-deployment"
    assert line["upstream"] == "azure" and line["upstream_status"] == 200
    assert line["model"] == "flaky-4o"  # the public name the client asked for
    assert AZURE_KEY not in repr(logs)
    async with gateway.request("GET", "/metrics") as response:
        samples = parse(await response.text())
    labels = {"route": "v1", "deployment": "azure/my-4o-deployment", "status": "200"}
    assert value(samples, "gateway_deployment_requests_total", **labels) == 1
    assert AZURE_KEY not in repr(samples)


async def test_one_deployments_credential_never_follows_the_request(
    start_gateway: StartGateway, upstreams: Upstreams
) -> None:
    gateway = await start_gateway(config(upstreams))
    upstreams.flaky.fail("status", 500)
    status, headers, _ = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "az-flaky"})
    assert (status, headers[DEPLOYMENT_HEADER]) == (200, "openai/gpt-4o-2024-08-06")
    azure_try = upstreams.flaky.recorder.last
    assert azure_try.path == "/openai/deployments/dep/chat/completions"
    assert azure_try.headers["api-key"] == "flaky-azure-key"
    assert "Authorization" not in azure_try.headers
    openai_try = upstreams.openai.last
    assert openai_try.headers["Authorization"] == "Bearer sk-client"  # the client's, again
    assert "api-key" not in openai_try.headers


@pytest.mark.parametrize("stream", [False, True])
async def test_deployment_tpm_limit(
    start_gateway: StartGateway, upstreams: Upstreams, stream: bool
) -> None:
    gateway = await start_gateway(config(upstreams))
    body = {**CHAT, "model": "tpm-limited", "stream": stream}
    status, headers, _ = await post(gateway, "/v1/chat/completions", body)
    assert (status, headers[DEPLOYMENT_HEADER]) == (200, "openai-tpm")
    # The answer's usage (more than 5 tokens) spent the minute's tokens.
    status, headers, body_bytes = await post(gateway, "/v1/chat/completions", body)
    assert status == 429 and b"at its limit" in body_bytes
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert len(upstreams.openai.requests) == 1
