"""`PostgresStore`: the ledger in PostgreSQL (``asyncpg``), for replicas that share one ledger.

Selected by a ``postgresql://`` URL.  The schema upgrade holds a transaction-scoped
advisory lock, so replicas that start together upgrade one after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import schema
from .row import COLUMNS, RowValues
from .schema import POSTGRES
from .store import UsageStore, UsageStoreError

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise UsageStoreError(
        "a postgresql:// usage store needs asyncpg: pip install 'chatgpt-gateway[usage-postgres]'"
    ) from exc

_INSERT = (
    f"INSERT INTO {schema.TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({POSTGRES.placeholders(len(COLUMNS))})"
)
#: Any constant of our own: the advisory lock that serialises schema upgrades.
_UPGRADE_LOCK = 0x75736167  # "usag"


class PostgresStore(UsageStore):
    """The ledger in the PostgreSQL database at ``url``, through a small connection pool."""

    dialect = POSTGRES

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self.url = url
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.max_connections
            )
            async with self._pool.acquire() as db, db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock($1)", _UPGRADE_LOCK)
                current = await _version(db)
                statements = schema.pending_statements(POSTGRES, current)
                for statement in statements:
                    await db.execute(statement)
                if statements:
                    await db.execute(f"DELETE FROM {schema.VERSION_TABLE}")
                    await db.execute(
                        f"INSERT INTO {schema.VERSION_TABLE} (version) VALUES ($1)",
                        schema.LATEST_VERSION,
                    )
        except (OSError, ValueError, asyncpg.PostgresError) as exc:
            await self.close()
            # The URL may hold a password: name the host only.
            raise UsageStoreError(f"cannot open the usage ledger on PostgreSQL: {exc}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def insert_many(self, rows: Sequence[RowValues]) -> None:
        pool = self._opened()
        try:
            async with pool.acquire() as db, db.transaction():
                await db.executemany(_INSERT, rows)
        except (OSError, asyncpg.PostgresError) as exc:
            raise UsageStoreError(f"usage ledger on PostgreSQL: {exc}") from exc

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        pool = self._opened()
        try:
            return [dict(record) for record in await pool.fetch(sql, *params)]
        except (OSError, asyncpg.PostgresError) as exc:
            raise UsageStoreError(f"usage ledger on PostgreSQL: {exc}") from exc

    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        pool = self._opened()
        try:
            status: str = await pool.execute(sql, *params)
        except (OSError, asyncpg.PostgresError) as exc:
            raise UsageStoreError(f"usage ledger on PostgreSQL: {exc}") from exc
        # The command tag: "DELETE 12".
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def schema_version(self) -> int:
        async with self._opened().acquire() as db:
            return await _version(db)

    def _opened(self) -> asyncpg.Pool:
        if self._pool is None:
            raise UsageStoreError("the usage ledger is not open")
        return self._pool


async def _version(db: Any) -> int:
    await db.execute(schema.create_version_table())
    return int(await db.fetchval(f"SELECT MAX(version) FROM {schema.VERSION_TABLE}") or 0)
