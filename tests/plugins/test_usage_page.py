"""The admin page's document and its rendering, from a real ledger: numbers, charts, escaping."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_plugins.usage.dashboard import LiveState, build_dashboard
from gateway_plugins.usage.page import CSP, STYLE, render_page
from gateway_plugins.usage.row import UsageRow
from gateway_plugins.usage.store import UsageStore
from gateway_plugins.usage.stores import open_store
from tests.plugins.usage_rows import usage_row

# 2026-12-02 10:30 UTC.
NOW = 1796207400.0


def row(ago: float, **fields: object) -> UsageRow:
    return usage_row(NOW - ago, f"r{ago}", **{"duration_ms": 50.0, **fields})


ROWS = [
    row(60),
    row(120, completion_tokens=15),
    row(2 * 3600, key_name="bob", team="support"),
    # Yesterday: this month, not today; in the 7-day chart, not the 24-hour one.
    row(26 * 3600, key_name="bob", team="support", status=429, error_code="rate_limited"),
    row(30, key_name="<script>alert(1)</script>", team="<b>x</b>", status=500),
]

LIVE = LiveState(
    quotas=[
        {
            "rule": "monthly-requests",
            "key": "identity",
            "subject": "alice",
            "limit": 100,
            "used": 2,
            "remaining": 98,
            "unit": "requests",
            "period": "month",
        }
    ],
    statuses={
        # The shapes auth and upstream_proxy report.
        "auth": {
            "credentials": {
                "openai": {
                    "org-main": {
                        "state": "cooling",
                        "cooling": {"gpt-4o": {"until": "T1", "why": {"status": 429}}},
                    },
                    "org-old": {
                        "state": "set aside",
                        "until": "T2",
                        "why": {"status": 401, "code": "invalid_api_key"},
                    },
                }
            }
        },
        "upstream_proxy": {"proxies": {"socks5://proxy:1080": {"state": "healthy"}}},
    },
    routes=[
        {
            "name": "openai",
            "methods": "*",
            "path": "/v1/{rest*}",
            "target": "-> openai",
            "pipeline": "auth > usage",
        }
    ],
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[UsageStore]:
    async with open_store(str(tmp_path / "usage.sqlite3")) as opened:
        await opened.insert_many(ROWS)
        yield opened


async def test_document_counts_today_and_this_month_per_key_and_team(store: UsageStore) -> None:
    document = await build_dashboard(store, LIVE, NOW)
    keys = {k["name"]: k for k in document["keys"]}
    assert keys["alice"]["today"] == {"requests": 2, "errors": 0, "tokens": 40}
    assert keys["alice"]["team"] == "research"
    assert keys["alice"]["quotas"][0]["remaining"] == 98
    assert keys["bob"]["today"]["requests"] == 1
    assert keys["bob"]["month"] == {"requests": 2, "errors": 1, "tokens": 30}
    teams = {t["name"]: t for t in document["teams"]}
    assert teams["support"]["month"]["requests"] == 2
    assert document["overview"]["last_hour"]["requests"] == 3
    assert document["overview"]["last_day"]["errors"] == 1
    assert [e["status"] for e in document["errors"]] == [500, 429]
    main, old = document["credentials"]
    assert (main["upstream"], main["name"], main["state"]) == ("openai", "org-main", "cooling")
    assert main["reason"] == "gpt-4o: cooling until T1 (429)"
    assert (old["state"], old["until"], old["reason"]) == ("set aside", "T2", "401 invalid_api_key")
    (proxy,) = document["proxies"]
    assert (proxy["plugin"], proxy["name"], proxy["state"]) == (
        "upstream_proxy",
        "socks5://proxy:1080",
        "healthy",
    )


async def test_charts_hold_whole_hours_per_team(store: UsageStore) -> None:
    charts = (await build_dashboard(store, LIVE, NOW))["charts"]
    day, week = charts["day"], charts["week"]
    assert len(day["hours"]) == 24 and len(week["hours"]) == 168
    assert day["hours"][-1] == NOW // 3600 * 3600
    assert day["requests"]["research"][-1] == 2
    assert day["tokens"]["research"][-1] == 40
    assert day["requests"]["support"][-3] == 1
    assert "support" in week["requests"] and sum(week["requests"]["support"]) == 2
    assert sum(day["requests"]["support"]) == 1


async def test_page_escapes_everything_and_draws_charts(store: UsageStore) -> None:
    html = render_page(await build_dashboard(store, LIVE, NOW), refresh=30, api_path="/admin/api")
    assert "<script>" not in html and "<b>x</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg ") >= 4
    bars = re.findall(r'<rect class="bar"[^>]* height="([\d.]+)"', html)
    assert bars and all(float(h) > 0 for h in bars)
    assert '<meta http-equiv="refresh" content="30">' in html
    alice = re.search(r'<tr data-key="alice">(.*?)</tr>', html)
    assert alice is not None
    assert '<td class="today-requests n">2</td>' in alice.group(1)
    assert "98 of 100 requests left this month" in alice.group(1)
    assert re.search(r'<tr data-credential="org-old">.*state-set_aside.*set aside', html)


def test_the_csp_allows_exactly_the_inline_style() -> None:
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CSP
    assert "default-src 'none'" in CSP and "frame-ancestors 'none'" in CSP
    assert "script-src" not in CSP  # no script at all: default-src 'none' forbids them
