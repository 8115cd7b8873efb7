"""``auth`` keys mode: client headers that choose an upstream account never reach it.

The upstream is a fake OpenAI that judges each request by its API key and its
``OpenAI-Organization`` header, as OpenAI does; one client is the official SDK
with ``OPENAI_ORG_ID`` set in its environment, as a team member's may be.
"""

from __future__ import annotations

import openai
import pytest

from tests.openai_accounts import ALICE, TWO_KEYS, OpenAIAccounts
from tests.openai_accounts import keys_config as config


@pytest.fixture
async def upstream(serve_app):
    return await OpenAIAccounts.serve(serve_app)


def sdk(gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=ALICE, max_retries=0)


async def test_the_sdk_with_a_foreign_organisation_cannot_empty_the_pool(
    upstream, start_gateway, monkeypatch
):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-of-someone-else")
    gateway = await start_gateway(config(upstream.url, TWO_KEYS))
    client = sdk(gateway)
    assert client.organization == "org-of-someone-else"  # the SDK sends it by itself
    for _ in range(4):
        answer = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content in (
            "answered by org-main",
            "answered by org-spare",
        )
    assert upstream.keys_seen() == ["sk-main", "sk-spare", "sk-main", "sk-spare"]
    assert all("OpenAI-Organization" not in headers for headers in upstream.seen)


async def test_account_headers_and_copies_of_the_key_are_not_forwarded(upstream, start_gateway):
    # The operator's own headers for the upstream stay, whatever their names.
    configured = 'headers = { "OpenAI-Organization" = "org-main" }'
    gateway = await start_gateway(config(upstream.url, TWO_KEYS, upstream=configured))
    sent = {
        "Authorization": f"Bearer {ALICE}",
        "OpenAI-Organization": "org-x",
        "OpenAI-Project": "proj-x",
        "api-key": ALICE,
        "X-Api-Key": ALICE,
        "X-Custom-Auth": f"token={ALICE}",
        "X-Kept": "yes",
    }
    async with gateway.request("POST", "/v1/chat/completions", json={}, headers=sent) as response:
        assert response.status == 200
    seen = upstream.seen[-1]
    for name in ("OpenAI-Project", "api-key", "X-Api-Key", "X-Custom-Auth"):
        assert name not in seen, name
    assert seen.getall("OpenAI-Organization") == ["org-main"]
    assert ALICE not in repr(list(seen.items()))
    assert seen["X-Kept"] == "yes"


async def test_a_credential_carries_its_own_organisation_project_and_headers(
    upstream, start_gateway
):
    upstream.accounts["sk-main"].trouble = "invalid"  # so that the request fails over
    credentials = (
        '{ name = "main", token = "sk-main", organization = "org-main", project = "proj-a", '
        'headers = { "X-Team" = "a" } }, '
        '{ name = "spare", token = "sk-spare", organization = "org-spare" }'
    )
    gateway = await start_gateway(config(upstream.url, credentials))
    headers = {"Authorization": f"Bearer {ALICE}", "OpenAI-Project": "proj-client"}
    async with gateway.request(
        "POST", "/v1/chat/completions", json={}, headers=headers
    ) as response:
        assert response.status == 200
        assert (await response.json())["choices"][0]["message"][
            "content"
        ] == "answered by org-spare"
    first, retried = upstream.seen
    assert (first["OpenAI-Organization"], first["OpenAI-Project"], first["X-Team"]) == (
        "org-main",
        "proj-a",
        "a",
    )
    # The retry carries the next credential's own headers, none of the first one's.
    assert retried["OpenAI-Organization"] == "org-spare"
    assert "OpenAI-Project" not in retried and "X-Team" not in retried


async def test_a_route_may_forward_account_headers_but_never_the_key(upstream, start_gateway):
    route = """
[routes.openai.plugins.auth]
forward_account_headers = true
"""
    gateway = await start_gateway(config(upstream.url, TWO_KEYS, route=route))
    sent = {"Authorization": f"Bearer {ALICE}", "OpenAI-Organization": "org-main", "api-key": ALICE}
    async with gateway.request("POST", "/v1/chat/completions", json={}, headers=sent) as response:
        assert response.status == 200
    seen = upstream.seen[-1]
    assert seen["OpenAI-Organization"] == "org-main"
    assert "api-key" not in seen
