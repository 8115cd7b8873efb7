"""``auth`` in keys mode: client keys, identities, credential pools with failover."""

from __future__ import annotations

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway.keys import key_digest, new_key
from plugins.credentials import Credential, CredentialPool, NoCredential, retry_after_seconds

ALICE, _ = new_key()
BOB, _ = new_key()


class TokenUpstream:
    """An upstream that answers by the credential it gets: tests set each token's status."""

    def __init__(self) -> None:
        self.behaviour: dict[str, tuple[int, dict[str, str]]] = {}
        self.seen: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        token = request.headers.get("Authorization", "")
        self.seen.append(token)
        status, headers = self.behaviour.get(token, (200, {}))
        if status != 200:
            return web.json_response({"detail": f"status {status}"}, status=status, headers=headers)
        if request.path == "/sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b"data: ok\n\n")
            return response
        return web.json_response({"token_used": token, "path": request.path})


def config(url: str, tokens: list[str], extra: str = "") -> str:
    creds = ", ".join(f'{{ name = "cred-{i}", token = "{t}" }}' for i, t in enumerate(tokens))
    return f"""
pipeline = ["access_log", "auth"]
[plugins.auth]
mode = "keys"
credentials.up = [{creds}]
keys.alice = {{ sha256 = "{key_digest(ALICE)}", team = "research" }}
keys.bob = {{ sha256 = "{key_digest(BOB)}", routes = ["chat"], models = ["small-model"] }}
{extra}
[upstreams.up]
url = "{url}"
[routes.chat]
path = "/v1/chat"
upstream = "up"
[routes.other]
path = "/{{rest*}}"
upstream = "up"
"""


@pytest.fixture
async def upstream(serve_app):
    fake = TokenUpstream()
    fake.url = await serve_app(fake.app)
    return fake


async def call(gateway, key: str | None, path: str = "/v1/chat", **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with gateway.request("POST", path, headers=headers, **kwargs) as response:
        body = await response.json() if "json" in response.content_type else await response.text()
        return response.status, body, response.headers


@pytest.mark.parametrize("key", [None, "", "gw-unknown", "Basic Zm9vOmJhcg==", "x" * 5000])
async def test_missing_unknown_and_malformed_keys_are_401(upstream, start_gateway, key):
    gateway = await start_gateway(config(upstream.url, ["Bearer t0"]))
    status, body, _ = await call(gateway, key)
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    assert upstream.seen == []


async def test_the_key_is_replaced_by_a_pool_credential(upstream, start_gateway):
    gateway = await start_gateway(config(upstream.url, ["sk-upstream-0"]))
    status, body, _ = await call(gateway, ALICE, json={"model": "anything"})
    assert status == 200
    assert upstream.seen == ["Bearer sk-upstream-0"]
    assert ALICE not in str(body)


async def test_x_authorization_is_accepted_and_removed(upstream, start_gateway):
    gateway = await start_gateway(config(upstream.url, ["t0"]))
    async with gateway.request("GET", "/v1/chat", headers={"X-Authorization": ALICE}) as response:
        assert response.status == 200
    assert upstream.seen == ["Bearer t0"]


async def test_routes_and_models_outside_the_key_are_403_before_the_upstream(
    upstream, start_gateway
):
    gateway = await start_gateway(config(upstream.url, ["t0"]))
    status, body, _ = await call(gateway, BOB, "/v1/other", json={"model": "small-model"})
    assert status == 403 and "route 'other'" in body["error"]["message"]
    status, body, _ = await call(gateway, BOB, json={"model": "big-model"})
    assert status == 403 and "model 'big-model'" in body["error"]["message"]
    assert upstream.seen == []
    status, _, _ = await call(gateway, BOB, json={"model": "small-model"})
    assert status == 200 and len(upstream.seen) == 1


async def test_a_restricted_key_cannot_hide_its_model_in_a_non_json_body(upstream, start_gateway):
    gateway = await start_gateway(config(upstream.url, ["t0"]))
    headers = {"Authorization": f"Bearer {BOB}", "Content-Type": "text/plain"}
    async with gateway.request("POST", "/v1/chat", data=b"model=big", headers=headers) as response:
        assert response.status == 400
    assert upstream.seen == []


async def test_credentials_rotate(upstream, start_gateway):
    gateway = await start_gateway(config(upstream.url, ["t0", "t1"]))
    for _ in range(4):
        await call(gateway, ALICE)
    assert upstream.seen == ["Bearer t0", "Bearer t1", "Bearer t0", "Bearer t1"]


@pytest.mark.parametrize("refusal", [401, 403])
async def test_a_refused_credential_is_set_aside_and_the_request_retried(
    upstream, start_gateway, refusal
):
    upstream.behaviour["Bearer t0"] = (refusal, {})
    gateway = await start_gateway(config(upstream.url, ["t0", "t1"]))
    with capture_logs() as logs:
        status, body, _ = await call(gateway, ALICE)
        assert status == 200 and body["token_used"] == "Bearer t1"
        for _ in range(3):
            await call(gateway, ALICE)
    assert upstream.seen == ["Bearer t0", "Bearer t1", "Bearer t1", "Bearer t1", "Bearer t1"]
    warning = next(e for e in logs if e["event"] == "upstream credential set aside")
    assert warning["credential"] == "cred-0" and warning["status"] == refusal
    assert "t0" not in repr([e for e in logs if e["event"] != "request"]).replace("cred-0", "")


async def test_a_429_cools_down_for_its_retry_after(upstream, start_gateway):
    upstream.behaviour["Bearer t0"] = (429, {"Retry-After": "120"})
    gateway = await start_gateway(config(upstream.url, ["t0", "t1"]))
    with capture_logs() as logs:
        status, body, _ = await call(gateway, ALICE)
    assert status == 200 and body["token_used"] == "Bearer t1"
    warning = next(e for e in logs if e["event"] == "upstream credential set aside")
    assert warning["seconds"] == 120 and warning["reason"] == "rate-limited"
    upstream.behaviour.clear()
    await call(gateway, ALICE)
    await call(gateway, ALICE)
    assert upstream.seen[2:] == ["Bearer t1", "Bearer t1"]  # t0 is still cooling down


async def test_no_usable_credential_is_503_saying_so(upstream, start_gateway):
    upstream.behaviour["Bearer t0"] = (429, {"Retry-After": "60"})
    upstream.behaviour["Bearer t1"] = (401, {})
    gateway = await start_gateway(config(upstream.url, ["t0", "t1"]))
    status, body, headers = await call(gateway, ALICE)
    assert status == 503
    assert "no usable credential for upstream 'up'" in body["error"]["message"]
    assert upstream.seen == ["Bearer t0", "Bearer t1"]
    status, body, headers = await call(gateway, ALICE)  # both set aside: the upstream is spared
    assert status == 503 and 55 <= int(headers["Retry-After"]) <= 60
    assert len(upstream.seen) == 2


async def test_failover_before_a_stream_starts(upstream, start_gateway):
    upstream.behaviour["Bearer t0"] = (401, {})
    gateway = await start_gateway(config(upstream.url, ["t0", "t1"]))
    async with gateway.request(
        "GET", "/sse", headers={"Authorization": f"Bearer {ALICE}"}
    ) as response:
        assert response.status == 200
        assert await response.read() == b"data: ok\n\n"


async def test_a_streamed_body_cannot_be_replayed(upstream, start_gateway):
    upstream.behaviour["Bearer t0"] = (401, {})
    gateway = await start_gateway(config(upstream.url, ["t0", "t1"]))
    big = b"x" * (300 * 1024)  # past the size the gateway reads whole
    status, body, _ = await call(gateway, ALICE, "/upload", data=big)
    assert status == 503 and "cannot be replayed" in body["error"]["message"]


def test_pool_rotation_set_aside_and_recovery():
    now = [0.0]
    pool = CredentialPool([Credential("a", "ta"), Credential("b", "tb")], clock=lambda: now[0])
    assert [pool.choose().name for _ in range(4)] == ["a", "b", "a", "b"]
    pool.set_aside(pool.credentials[0], 10)
    assert {pool.choose().name for _ in range(4)} == {"b"}
    pool.set_aside(pool.credentials[1], 5)
    with pytest.raises(NoCredential) as caught:
        pool.choose()
    assert caught.value.retry_after == 5
    now[0] = 5.0
    assert pool.choose().name == "b" and pool.usable() == 1
    now[0] = 10.0
    assert pool.usable() == 2


def test_credential_repr_hides_the_token():
    assert "secret-token" not in repr(Credential("name", "secret-token"))


def test_retry_after_forms():
    assert retry_after_seconds("17", 30) == 17
    assert retry_after_seconds(None, 30) == 30
    assert retry_after_seconds("soon", 30) == 30
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 30, now=1445412470.0) == 10


async def test_bad_key_config_is_reported(start_gateway):
    from gateway.errors import ConfigError

    text = config("http://127.0.0.1:9", ["t"]).replace(key_digest(ALICE), "not-a-digest")
    with pytest.raises(ConfigError) as caught:
        await start_gateway(text)
    assert "keys.alice.sha256: not a hex SHA-256 digest" in str(caught.value)
