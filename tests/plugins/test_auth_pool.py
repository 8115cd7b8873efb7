"""``auth`` keys mode: credential pools rest a credential only on the upstream's word about it.

The upstream is a fake OpenAI (`tests.openai_accounts`) answering with OpenAI's
error codes; one client is the official SDK.
"""

from __future__ import annotations

import openai
import pytest
from structlog.testing import capture_logs

from gateway_plugins.auth.credentials import (
    Credential,
    CredentialPool,
    NoCredential,
    Refusal,
    read_refusal,
)
from tests.openai_accounts import ALICE, ONE_KEY, OpenAIAccounts
from tests.openai_accounts import keys_config as config


@pytest.fixture
async def upstream(serve_app):
    return await OpenAIAccounts.serve(serve_app)


async def chat(gateway, model: str = "gpt-4o", headers: dict[str, str] | None = None):
    sent = {"Authorization": f"Bearer {ALICE}", **(headers or {})}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with gateway.request("POST", "/v1/chat/completions", json=body, headers=sent) as answer:
        return answer.status, await answer.json(), answer.headers


@pytest.mark.parametrize("trouble", ["invalid", "deactivated"])
async def test_a_credential_the_upstream_says_is_unusable_is_set_aside(
    upstream, start_gateway, trouble
):
    upstream.accounts["sk-main"].trouble = trouble
    gateway = await start_gateway(config(upstream.url))
    with capture_logs() as logs:
        status, body, _ = await chat(gateway)
        assert status == 200 and body["choices"][0]["message"]["content"] == "answered by org-spare"
        for _ in range(3):
            assert (await chat(gateway))[0] == 200
    assert upstream.keys_seen() == ["sk-main", "sk-spare", "sk-spare", "sk-spare", "sk-spare"]
    warning = next(e for e in logs if e["event"] == "upstream credential set aside")
    assert warning["credential"] == "main" and warning["seconds"] == 3600
    assert "sk-main" not in repr(logs) and "sk-spare" not in repr(logs)
    # Its status, for an admin page: names, states, until when and why; no secret.
    status = gateway.service.runtime.context.statuses()["auth"]
    pool = status["credentials"]["openai"]
    assert pool["spare"] == {"state": "usable"}
    assert pool["main"]["state"] == "set aside" and pool["main"]["until"].endswith("+00:00")
    code = {"invalid": "invalid_api_key", "deactivated": "account_deactivated"}[trouble]
    assert pool["main"]["why"] == {"status": 401, "code": code}
    assert "sk-" not in repr(status)


async def test_other_refusals_go_to_the_client_and_leave_the_pool_alone(upstream, start_gateway):
    # A route that forwards OpenAI-Organization: a wrong one is the client's mistake.
    route = "[routes.openai.plugins.auth]\nforward_account_headers = true"
    gateway = await start_gateway(config(upstream.url, route=route))
    status, body, _ = await chat(gateway, headers={"OpenAI-Organization": "org-other"})
    assert status == 401 and body["error"]["code"] == "mismatched_organization"
    assert upstream.keys_seen() == ["sk-main"]  # not retried on the other credential
    for _ in range(2):
        assert (await chat(gateway))[0] == 200
    assert upstream.keys_seen()[1:] == ["sk-spare", "sk-main"]  # both still in rotation


async def test_one_429_cools_one_credential_for_one_model_only(upstream, start_gateway):
    upstream.accounts["sk-main"].limited["gpt-4o"] = {"Retry-After": "20"}
    gateway = await start_gateway(config(upstream.url, ONE_KEY))
    # The client that met the 429 gets it: the upstream's status, message and Retry-After.
    status, body, headers = await chat(gateway, "gpt-4o")
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["message"] == "Rate limit reached for gpt-4o in organization org-main."
    assert headers["Retry-After"] == "20"
    # Other models are not held back.
    assert (await chat(gateway, "gpt-4o-mini"))[0] == 200
    # The same model is answered here, in the upstream's words, without calling it.
    status, body, headers = await chat(gateway, "gpt-4o")
    assert status == 429 and body["error"]["message"].startswith("Rate limit reached for gpt-4o")
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert 18 <= int(headers["Retry-After"]) <= 20
    assert len(upstream.seen) == 2


async def test_a_429_fails_over_to_the_next_credential(upstream, start_gateway):
    upstream.accounts["sk-main"].limited["gpt-4o"] = {"Retry-After": "20"}
    gateway = await start_gateway(config(upstream.url))
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=ALICE, max_retries=0)
    for _ in range(3):
        answer = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "answered by org-spare"
    assert upstream.keys_seen() == ["sk-main", "sk-spare", "sk-spare", "sk-spare"]


async def test_x_ratelimit_reset_sets_the_cool_down(upstream, start_gateway):
    upstream.accounts["sk-main"].limited["gpt-4o"] = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "1s",
    }
    gateway = await start_gateway(config(upstream.url, ONE_KEY))
    with capture_logs() as logs:
        status, _, headers = await chat(gateway)
    assert status == 429 and headers["Retry-After"] == "360"
    assert next(e for e in logs if e["event"] == "upstream credential cooling")["seconds"] == 360


async def test_out_of_quota_rests_longer_and_the_client_hears_why(upstream, start_gateway):
    upstream.accounts["sk-main"].trouble = "quota"
    gateway = await start_gateway(config(upstream.url, ONE_KEY, auth='quota_rest = "2h"'))
    status, body, headers = await chat(gateway, "gpt-4o")
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert headers["Retry-After"] == "7200"
    status, body, headers = await chat(gateway, "gpt-4o-mini")  # every model: not called again
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert 7190 <= int(headers["Retry-After"]) <= 7200
    assert len(upstream.seen) == 1


async def test_a_streamed_body_cannot_be_replayed(upstream, start_gateway):
    upstream.accounts["sk-main"].trouble = "invalid"
    gateway = await start_gateway(config(upstream.url))
    big = b"x" * (300 * 1024)  # past the size the gateway reads whole
    headers = {"Authorization": f"Bearer {ALICE}", "Content-Type": "application/octet-stream"}
    async with gateway.request("POST", "/v1/files", data=big, headers=headers) as answer:
        assert answer.status == 503
        assert "cannot be replayed" in (await answer.json())["error"]["message"]
        assert answer.headers["Retry-After"] == "1"


def test_pool_rests_per_credential_and_per_model():
    now = [0.0]
    pool = CredentialPool([Credential("a", "ta"), Credential("b", "tb")], clock=lambda: now[0])
    assert [pool.choose().name for _ in range(4)] == ["a", "b", "a", "b"]
    limited = Refusal(429, "slow down", "requests", "rate_limit_exceeded")
    pool.cool(pool.named("a"), "m1", 10, limited)
    assert {pool.choose("m1").name for _ in range(4)} == {"b"}
    assert {pool.choose("m2").name for _ in range(4)} == {"a", "b"}
    pool.set_aside(pool.named("b"), 5, Refusal(401, "bad key", code="invalid_api_key"))
    with pytest.raises(NoCredential) as caught:
        pool.choose("m1")
    assert caught.value.retry_after == 5 and caught.value.refusal.code == "invalid_api_key"
    now[0] = 5.0
    assert pool.choose("m1").name == "b" and pool.usable("m1") == 1 and pool.usable("m2") == 2
    now[0] = 10.0
    assert pool.usable("m1") == 2


def test_the_cooling_table_stays_bounded():
    from gateway_plugins.auth import credentials

    pool = CredentialPool([Credential("a", "ta")], clock=lambda: 0.0)
    for i in range(credentials.MAX_COOLING + 50):
        pool.cool(pool.named("a"), f"model-{i}", 100 + i)
    assert len(pool._cooling) == credentials.MAX_COOLING
    assert pool.usable("model-0") == 1  # the soonest to end went first
    assert pool.usable(f"model-{credentials.MAX_COOLING + 49}") == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"message": "m", "type": "t", "code": "c"}}', Refusal(401, "m", "t", "c")),
        (b'{"detail": {"message": "gone", "code": "token_expired"}}', None),
        (b'{"detail": "Unauthorized"}', Refusal(401, "Unauthorized")),
        (b"[" * 20000, Refusal(401, "the upstream answered 401")),
        (b"\xff\xfe", Refusal(401, "the upstream answered 401")),
        (None, Refusal(401, "the upstream answered 401")),
        (b'{"error": {"message": 5, "code": ["x"]}}', Refusal(401, "the upstream answered 401")),
    ],
)
def test_refusals_are_read_from_any_body(body, expected):
    refusal = read_refusal(401, body)
    if expected is None:
        assert (refusal.message, refusal.code) == ("gone", "token_expired")
    else:
        assert refusal == expected


def test_credential_repr_hides_the_token_and_its_headers():
    credential = Credential("name", "secret-token", headers={"X-Secret": "also-secret"})
    assert "secret-token" not in repr(credential) and "also-secret" not in repr(credential)


def test_an_empty_organisation_sends_no_header():
    # (``organization = "${OPENAI_ORG_ID:-}"`` with the variable unset.)
    assert Credential("n", "t", organization="", project="").upstream_headers() == {
        "Authorization": "Bearer t"
    }
