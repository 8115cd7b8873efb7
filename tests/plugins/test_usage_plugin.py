"""The ``usage`` plugin in a real gateway: one ledger row per request, and the admin page's
key, headers and JSON API."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.keys import key_digest, new_key
from gateway_plugins.usage.page import CSP
from gateway_plugins.usage.plugin import UsageLedger
from gateway_plugins.usage.row import UsageRow
from gateway_plugins.usage.stores import open_store
from tests.openai_accounts import ALICE, OpenAIAccounts
from tests.proxies import free_port

ADMIN, _ = new_key()
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def usage_config(api_url: str, store: str, usage: str = "") -> str:
    return f"""
pipeline = ["access_log", "usage", "metrics", "auth"]
[plugins.metrics]
path = "/metrics"
[plugins.auth]
mode = "keys"
keys.alice = {{ sha256 = "{key_digest(ALICE)}", team = "research" }}
credentials.openai = [
  {{ name = "main", token = "sk-main" }},
  {{ name = "spare", token = "sk-spare" }},
]
[plugins.usage]
store = "{store}"
flush_interval = "50ms"
{usage}
[plugins.usage.admin]
path = "/admin"
keys.ops = {{ sha256 = "{key_digest(ADMIN)}" }}
[upstreams.openai]
url = "{api_url}"
[routes.openai]
path = "/v1/{{rest*}}"
upstream = "openai"
upstream_path = "/v1/{{rest}}"
[routes.admin]
methods = ["GET", "HEAD"]
path = "/admin{{rest*}}"
skip = ["auth"]
[routes.metrics]
methods = ["GET"]
path = "/metrics"
skip = ["auth"]
"""


@pytest.fixture
async def api(serve_app: Any) -> OpenAIAccounts:
    return await OpenAIAccounts.serve(serve_app)


async def ledger_rows(location: str, count: int) -> list[UsageRow]:
    """The ledger's rows once there are ``count`` of them (bounded wait: 10 s)."""
    async with open_store(location) as store:
        for _ in range(200):
            rows = await store.rows(0, time.time() + 60)
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.05)
    raise AssertionError(f"the ledger has {len(rows)} rows, not {count}")


async def test_one_row_per_request_with_names_never_secrets(
    api: OpenAIAccounts, start_gateway: Any, tmp_path: Path
) -> None:
    location = str(tmp_path / "usage.sqlite3")
    gateway = await start_gateway(usage_config(api.url, location))
    alice = {"Authorization": f"Bearer {ALICE}"}
    async with gateway.request("POST", "/v1/chat/completions", json=CHAT, headers=alice) as r:
        assert r.status == 200
        await r.read()
    async with gateway.request("GET", "/v1/models", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401
    async with gateway.request("GET", "/admin/api/dashboard", headers=bearer(ADMIN)) as r:
        assert r.status == 200  # the admin page's own requests are not ledger rows
    first, second = await ledger_rows(location, 2)
    assert (first.key_name, first.team, first.route, first.upstream) == (
        "alice",
        "research",
        "openai",
        "openai",
    )
    assert (first.status, first.credential, first.model) == (200, "main", "gpt-4o-mini")
    assert (first.prompt_tokens, first.completion_tokens) == (1, 3)  # the upstream's usage
    assert first.tokens_estimated is False
    assert first.bytes_in > 0 and first.bytes_out > 0 and first.duration_ms > 0
    assert first.ttfb_ms is not None and abs(first.ts - time.time()) < 60
    assert first.request_id and first.request_id != second.request_id
    assert (second.key_name, second.status, second.error_code) == (None, 401, "unauthorized")
    text = repr([first, second])
    assert ALICE not in text and "sk-main" not in text and "nope" not in text
    assert len(await ledger_rows(location, 2)) == 2


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def basic(user: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (bearer("gw-not-the-admin-key"), 401),
        (bearer(ALICE), 401),  # a client key is not an admin key
        (basic("ops", "wrong"), 401),
        ({"Authorization": "Basic !!!"}, 401),
        (bearer(ADMIN), 200),
        (basic("anyone", ADMIN), 200),
    ],
)
async def test_only_an_admin_key_opens_the_page(
    api: OpenAIAccounts, start_gateway: Any, tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    gateway = await start_gateway(usage_config(api.url, str(tmp_path / "u.sqlite3")))
    async with gateway.request("GET", "/admin", headers=headers) as r:
        assert r.status == status
        body = await r.text()
        assert r.headers["Content-Security-Policy"] == CSP
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Cache-Control"] == "no-store"
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        assert r.content_type == "application/json"
        assert '"code": "unauthorized"' in body
    else:
        assert r.content_type == "text/html" and "<h1>Gateway usage</h1>" in body


async def test_json_api_and_unknown_admin_paths(
    api: OpenAIAccounts, start_gateway: Any, tmp_path: Path
) -> None:
    location = str(tmp_path / "u.sqlite3")
    gateway = await start_gateway(usage_config(api.url, location))
    for _ in range(2):
        async with gateway.request(
            "POST", "/v1/chat/completions", json=CHAT, headers=bearer(ALICE)
        ) as r:
            assert r.status == 200
    await ledger_rows(location, 2)
    async with gateway.request("GET", "/admin/api/usage?by=team", headers=bearer(ADMIN)) as r:
        assert r.status == 200
        document = await r.json()
    assert document["by"] == "team"
    assert [(row["team"], row["requests"], row["total_tokens"]) for row in document["rows"]] == [
        ("research", 2, 8)
    ]
    for path, status in [
        ("/admin/api/usage?by=secret", 400),
        ("/admin/api/usage?since=someday", 400),
        ("/admin/nope", 404),
        ("/administrator", 404),
    ]:
        async with gateway.request("GET", path, headers=bearer(ADMIN)) as r:
            assert r.status == status, path
            assert (await r.json())["error"]["message"]
    async with gateway.request("POST", "/admin", headers=bearer(ADMIN)) as r:
        assert r.status == 405  # the route takes GET and HEAD only


async def test_a_full_queue_drops_counts_and_logs_but_never_blocks(
    api: OpenAIAccounts, start_gateway: Any, tmp_path: Path
) -> None:
    # A PostgreSQL that is not there: rows queue, and past queue_size they are dropped.
    unreachable = f"postgresql://gateway:pw-secret@127.0.0.1:{free_port()}/usage"
    config = usage_config(api.url, unreachable, usage="queue_size = 2")
    with capture_logs() as logs:
        gateway = await start_gateway(config)
        for _ in range(5):
            async with gateway.request(
                "POST", "/v1/chat/completions", json=CHAT, headers=bearer(ALICE)
            ) as r:
                assert r.status == 200
        ledger = next(p for p in gateway.service.runtime.plugins if isinstance(p, UsageLedger))
        status = ledger.status()
        assert (status["rows_queued"], status["rows_dropped"], status["open"]) == (2, 3, False)
        assert "pw-secret" not in repr(status)
        async with gateway.request("GET", "/admin", headers=bearer(ADMIN)) as r:
            assert r.status == 503  # the page needs the ledger
        for _ in range(100):  # the drops are logged within a second, in one line
            if any(e["event"] == "usage rows dropped" for e in logs):
                break
            await asyncio.sleep(0.05)
        async with gateway.request("GET", "/metrics") as r:
            exposition = await r.text()
        # (The registry is the process's: other tests' drops may be in it too.)
        counted = re.search(r"^gateway_usage_rows_dropped_total (\S+)$", exposition, re.M)
        assert counted is not None and float(counted.group(1)) >= 3
    (dropped,) = [e for e in logs if e["event"] == "usage rows dropped"]
    assert (dropped["rows"], dropped["reason"]) == (3, "queue full")
    assert "pw-secret" not in repr(dropped)
    unavailable = [e for e in logs if e["event"] == "usage ledger unavailable"]
    assert unavailable and all("pw-secret" not in repr(e) for e in unavailable)


def test_config_problems_are_reported() -> None:
    config = UsageLedger.Config()
    assert config.admin.problems() == []
    from gateway_plugins.usage.admin import AdminConfig, AdminKey

    bad = AdminConfig(path="admin/", keys={"ops": AdminKey("not-a-digest")})
    assert bad.problems() == [
        "admin.path: must start with \"/\" and not end with one ('admin/')",
        "admin.keys.ops.sha256: not a hex SHA-256 digest (use `gateway keygen`)",
    ]
    assert AdminConfig(path="/admin").problems() == [
        "admin.keys: the admin page needs at least one key (gateway keygen)"
    ]
