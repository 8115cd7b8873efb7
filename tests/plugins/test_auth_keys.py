"""``auth`` in keys mode: client keys, identities, routes and models they may use.

(Credential pools: `test_auth_pool`; headers that choose an account: `test_auth_headers`.)"""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.keys import key_digest, new_key

ALICE, _ = new_key()
BOB, _ = new_key()


class TokenUpstream:
    """An upstream that answers with the credential it got."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        token = request.headers.get("Authorization", "")
        self.seen.append(token)
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


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"model": None, "messages": []},
        {"assistant_id": "asst_with_a_big_model", "thread": {}},
    ],
)
async def test_a_restricted_key_must_name_an_allowed_model(upstream, start_gateway, body):
    gateway = await start_gateway(config(upstream.url, ["t0"]))
    status, error, _ = await call(gateway, BOB, json=body)
    assert status == 403 and "name one in the body's model" in error["error"]["message"]
    status, error, _ = await call(gateway, BOB, data=b"")  # no body at all
    assert status == 403
    assert upstream.seen == []
    # Reading needs no model: a GET passes.
    async with gateway.request("GET", "/v1/chat", headers={"Authorization": f"Bearer {BOB}"}) as r:
        assert r.status == 200


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


async def test_bad_key_config_is_reported(start_gateway):
    from gateway.errors import ConfigError

    text = config("http://127.0.0.1:9", ["t"]).replace(key_digest(ALICE), "not-a-digest")
    with pytest.raises(ConfigError) as caught:
        await start_gateway(text)
    assert "keys.alice.sha256: not a hex SHA-256 digest" in str(caught.value)
