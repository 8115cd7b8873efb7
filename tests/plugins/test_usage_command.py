"""`gateway usage`: totals of a real ledger as a table, CSV and JSON, for a period."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway_plugins.usage.stores import open_store
from gateway_plugins.usage.times import parse_time
from tests.plugins.test_usage_store import ROWS, T0


def write_ledger(location: str) -> str:
    async def write() -> None:
        async with open_store(location) as store:
            await store.insert_many(ROWS)

    asyncio.run(write())
    return location


@pytest.fixture
def ledger(tmp_path: Path) -> str:
    return write_ledger(str(tmp_path / "usage.sqlite3"))


# The rows are from 2026-11-30 23:00 to 2026-12-01 00:02 UTC.
PERIOD = ["--since", "2026-11-30", "--until", "2026-12-02"]


def test_table_by_key_with_a_total_line(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "--store", ledger, *PERIOD]) == 0
    out = capsys.readouterr().out
    assert "usage from 2026-11-30T00:00:00+00:00 to 2026-12-02T00:00:00+00:00 (UTC), by key" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[3:] if line[:1].isalnum()}
    # key, requests, errors, prompt, completion, total, estimated, avg ms, bytes in, bytes out
    assert lines["alice"][1:7] == ["2", "0", "20", "12", "32", "1"]
    assert lines["bob"][1:3] == ["2", "1"]
    assert lines["total"][1:3] == ["5", "2"]
    assert lines["total"][7] == "140.0"


def test_csv_by_day_for_a_spreadsheet(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "--store", ledger, "--by", "day", "--format", "csv", *PERIOD]) == 0
    records = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["day"], r["requests"], r["total_tokens"]) for r in records] == [
        ("2026-11-30", "3", "47"),
        ("2026-12-01", "2", "30"),
    ]


def test_json_by_team_names_the_period(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["usage", "--store", ledger, "--by", "team", "--format", "json", *PERIOD]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["by"] == "team"
    assert document["since"] == "2026-11-30T00:00:00+00:00"
    assert {r["team"]: r["requests"] for r in document["rows"]} == {
        "research": 2,
        "support": 2,
        None: 1,
    }


def test_until_is_exclusive(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["usage", "--store", ledger, "--format", "json"]
    assert main([*args, "--since", "2026-11-30", "--until", "2026-12-01"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert sum(r["requests"] for r in rows) == 3


def test_bad_time_is_an_error_not_a_traceback(
    ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["usage", "--store", ledger, "--since", "last tuesday"]) == 1
    assert "not a time: 'last tuesday'" in capsys.readouterr().err


def test_relative_and_named_times() -> None:
    now = T0 + 3600 + 30  # 2026-12-01 00:00:30 UTC
    assert parse_time("today", now) == T0 + 3600
    assert parse_time("7d", now) == now - 7 * 86400
    assert parse_time("12h", now) == now - 12 * 3600
    assert parse_time("2026-12-01T01:00+01:00", now) == T0 + 3600


def test_postgres_ledger_from_the_console_script(postgres_url: str) -> None:
    write_ledger(postgres_url)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "usage",
            "--store",
            postgres_url,
            "--by",
            "model",
            "--format",
            "json",
            *PERIOD,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = json.loads(done.stdout)["rows"]
    assert {r["model"]: r["requests"] for r in rows} == {"gpt-4o-mini": 3, "gpt-4o": 1, None: 1}
