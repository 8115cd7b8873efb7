"""The usage ledger's stores, SQLite and a real PostgreSQL, answer every report the same way."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway_plugins.usage import schema
from gateway_plugins.usage.row import UsageRow
from gateway_plugins.usage.store import UsageStore, UsageStoreError
from gateway_plugins.usage.stores import open_store
from tests.plugins.usage_rows import usage_row

DAY = 86400.0
# 2026-11-30 23:00 UTC: the rows below straddle midnight into December.
T0 = 1796079600.0


def row(offset: float, **fields: object) -> UsageRow:
    return usage_row(T0 + offset, f"r{offset}", **{**_STORED, **fields})


_STORED: dict[str, object] = {
    "credential": "org-main",
    "model": "gpt-4o-mini",
    "duration_ms": 100.0,
    "ttfb_ms": 20.0,
    "bytes_in": 300,
    "bytes_out": 900,
}

ROWS = [
    row(0),
    row(60, completion_tokens=7, tokens_estimated=True),
    row(1800, key_name="bob", team="support", status=429, error_code="rate_limited"),
    # Past midnight: December 1st.
    row(3600 + 60, key_name="bob", team="support", model="gpt-4o", duration_ms=300.0),
    row(3600 + 120, key_name=None, team=None, route="conversation", model=None, status=502),
]


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UsageStore]:
    if request.param == "postgres":
        location = request.getfixturevalue("postgres_url")
    else:
        location = str(tmp_path / "ledger" / "usage.sqlite3")
    async with open_store(location) as opened:
        yield opened


async def test_rows_come_back_as_written(store: UsageStore) -> None:
    await store.insert_many(ROWS)
    assert await store.rows(T0, T0 + DAY) == ROWS


async def test_a_batch_of_any_size_comes_back_whole_and_in_order(store: UsageStore) -> None:
    # 101 rows: SQLite writes them as INSERTs of 32, 32, 32, 4 and 1 rows.
    rows = [
        row(i, key_name=f"k{i}" if i % 3 else None, ttfb_ms=None if i % 2 else 1.5)
        for i in range(101)
    ]
    await store.insert_many(rows)
    assert await store.rows(T0, T0 + DAY) == rows


async def test_totals_by_key_count_requests_errors_and_tokens(store: UsageStore) -> None:
    await store.insert_many(ROWS)
    totals = {t.group: t for t in await store.totals("key", T0, T0 + DAY)}
    assert set(totals) == {"alice", "bob", None}
    alice, bob = totals["alice"], totals["bob"]
    assert (alice.requests, alice.errors, alice.prompt_tokens, alice.completion_tokens) == (
        2,
        0,
        20,
        12,
    )
    assert alice.total_tokens == 32 and alice.estimated == 1
    assert (bob.requests, bob.errors, bob.bytes_in, bob.bytes_out) == (2, 1, 600, 1800)
    assert bob.avg_duration_ms == 200.0
    assert totals[None].errors == 1


@pytest.mark.parametrize(
    ("by", "groups"),
    [
        ("team", {"research": 2, "support": 2, None: 1}),
        ("model", {"gpt-4o-mini": 3, "gpt-4o": 1, None: 1}),
        ("route", {"openai": 4, "conversation": 1}),
        ("day", {"2026-11-30": 3, "2026-12-01": 2}),
    ],
)
async def test_totals_group_by_team_model_route_and_utc_day(
    store: UsageStore, by: str, groups: dict[str | None, int]
) -> None:
    await store.insert_many(ROWS)
    assert {t.group: t.requests for t in await store.totals(by, T0, T0 + DAY)} == groups


async def test_since_is_inclusive_and_until_exclusive(store: UsageStore) -> None:
    await store.insert_many(ROWS)
    totals = await store.totals("route", T0 + 60, T0 + 3600 + 60)
    assert [(t.group, t.requests) for t in totals] == [("openai", 2)]


async def test_unknown_grouping_is_refused(store: UsageStore) -> None:
    with pytest.raises(ValueError, match="cannot group by 'secret'"):
        await store.totals("secret", T0, T0 + DAY)


async def test_hourly_series_per_team(store: UsageStore) -> None:
    await store.insert_many(ROWS)
    points = [(p.hour - T0, p.team, p.requests, p.tokens) for p in await store.hourly(T0, T0 + DAY)]
    assert points == [
        (0, "research", 2, 32),
        (0, "support", 1, 15),
        (3600, None, 1, 15),
        (3600, "support", 1, 15),
    ] or points == [
        # PostgreSQL sorts NULL last, SQLite first: either order is a correct series.
        (0, "research", 2, 32),
        (0, "support", 1, 15),
        (3600, "support", 1, 15),
        (3600, None, 1, 15),
    ]


async def test_overview_counts_errors_and_latency(store: UsageStore) -> None:
    await store.insert_many(ROWS)
    overview = await store.overview(T0, T0 + DAY)
    assert (overview.requests, overview.errors) == (5, 2)
    assert overview.avg_duration_ms == 140.0
    assert overview.p95_duration_ms == 300.0
    assert overview.avg_ttfb_ms == 20.0
    empty = await store.overview(T0 + DAY, T0 + 2 * DAY)
    assert (empty.requests, empty.p95_duration_ms) == (0, 0.0)


async def test_latest_errors_newest_first(store: UsageStore) -> None:
    await store.insert_many(ROWS)
    errors = await store.latest_errors(limit=5)
    assert [(e.status, e.error_code) for e in errors] == [(502, None), (429, "rate_limited")]
    assert len(await store.latest_errors(limit=1)) == 1


async def test_retention_deletes_only_older_rows(store: UsageStore) -> None:
    await store.insert_many(ROWS)
    deleted = await store.delete_older_than(days=1, now=T0 + DAY + 3600)
    assert deleted == 3
    assert [r.request_id for r in await store.rows(0, T0 + 2 * DAY)] == ["r3660", "r3720"]


async def test_schema_is_created_once_and_versioned(store: UsageStore) -> None:
    assert await store.schema_version() == schema.LATEST_VERSION
    await store.insert_many(ROWS[:1])
    # Opening the same ledger again upgrades nothing and keeps the rows.
    location = getattr(store, "path", None) or store.url  # type: ignore[attr-defined]
    async with open_store(location) as again:
        assert await again.schema_version() == schema.LATEST_VERSION
        assert len(await again.rows(0, T0 + DAY)) == 1


async def test_ledger_newer_than_the_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    async with open_store(str(path)):
        pass
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE {schema.VERSION_TABLE} SET version = 99")
    with pytest.raises(UsageStoreError, match="schema version 99"):
        async with open_store(str(path)):
            pass


async def test_sqlite_ledger_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    async with open_store(str(path)) as opened:
        await opened.insert_many(ROWS)
        with sqlite3.connect(path) as reader:  # a second reader while the writer is open
            assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert reader.execute("SELECT COUNT(*) FROM usage_rows").fetchone()[0] == 5


async def test_unreachable_postgres_is_a_store_error() -> None:
    from tests.proxies import free_port

    store = open_store(f"postgresql://nobody:hunter2@127.0.0.1:{free_port()}/x")
    with pytest.raises(UsageStoreError) as raised:
        await store.open()
    assert "hunter2" not in str(raised.value)
