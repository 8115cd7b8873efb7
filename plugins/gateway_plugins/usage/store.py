"""`UsageStore`: the ledger's database, SQLite or PostgreSQL (`stores.open_store` picks one).

A store knows how to run SQL on its database; the reports and the schema are shared
(`reports`, `schema`), so both databases answer every report the same way.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Sequence
from typing import Any

from . import reports
from .reports import HourlyPoint, Overview, Totals
from .row import RowValues, UsageRow
from .schema import Dialect


class UsageStoreError(Exception):
    """The ledger's database could not be opened, upgraded, read or written."""


class UsageStore(abc.ABC):
    """The ledger: rows appended in batches, read back as reports.

    `open` connects and brings the schema to the latest version; `close` lets go of
    the connection.  Every method may raise `UsageStoreError`.
    """

    dialect: Dialect

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or upgrade the schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (idempotent)."""

    @abc.abstractmethod
    async def insert_many(self, rows: Sequence[RowValues]) -> None:
        """Append ``rows`` (each a `UsageRow`'s values) in one transaction."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """Run a query; each record is a mapping of column name to value."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        """Run a statement; return how many rows it changed."""

    @abc.abstractmethod
    async def schema_version(self) -> int:
        """The schema version the ledger is at (0 when it has none yet)."""

    async def __aenter__(self) -> UsageStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def totals(self, by: str, since: float, until: float) -> list[Totals]:
        """Totals per key, team, model, route or day (see `reports.GROUPINGS`)."""
        sql, params = reports.totals_query(self.dialect, by, since, until)
        return [reports.totals_from(r) for r in await self.fetch(sql, params)]

    async def key_teams(self, since: float, until: float) -> dict[str, str | None]:
        """Each key's team in the period (its latest, should it have changed)."""
        sql, params = reports.key_teams_query(self.dialect, since, until)
        return {r["key_name"]: r["team"] for r in await self.fetch(sql, params)}

    async def hourly(self, since: float, until: float) -> list[HourlyPoint]:
        """Requests and tokens per hour and team."""
        sql, params = reports.hourly_query(self.dialect, since, until)
        return [reports.hourly_from(r) for r in await self.fetch(sql, params)]

    async def overview(self, since: float, until: float) -> Overview:
        """Requests, errors, mean and 95th-percentile latency for the period."""
        sql, params = reports.overview_query(self.dialect, since, until)
        (record,) = await self.fetch(sql, params)
        requests = int(record["requests"])
        p95 = 0.0
        if requests:
            # The 95th percentile is the ceil(5 %)-th longest duration, counting from 1.
            rank = max(math.ceil(requests * 0.05) - 1, 0)
            sql, params = reports.percentile_query(self.dialect, since, until, rank)
            found = await self.fetch(sql, params)
            p95 = float(found[0]["duration_ms"]) if found else 0.0
        return Overview(
            requests=requests,
            errors=int(record["errors"] or 0),
            avg_duration_ms=round(float(record["avg_duration_ms"] or 0.0), 1),
            p95_duration_ms=round(p95, 1),
            avg_ttfb_ms=round(float(record["avg_ttfb_ms"] or 0.0), 1),
        )

    async def latest_errors(self, limit: int = 20) -> list[UsageRow]:
        """The most recent rows that answered an error status, newest first."""
        sql, params = reports.latest_errors_query(self.dialect, limit)
        return [UsageRow.from_record(r) for r in await self.fetch(sql, params)]

    async def rows(self, since: float, until: float) -> list[UsageRow]:
        """Every row of the period, oldest first."""
        sql, params = reports.rows_query(self.dialect, since, until)
        return [UsageRow.from_record(r) for r in await self.fetch(sql, params)]

    async def delete_older_than(self, days: float, now: float | None = None) -> int:
        """Retention: delete the rows older than ``days``; return how many went."""
        before = (time.time() if now is None else now) - days * 86400
        sql, params = reports.retention_query(self.dialect, before)
        return await self.execute(sql, params)
