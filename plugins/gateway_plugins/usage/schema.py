"""The ledger's SQL dialects and versioned schema, shared by the SQLite and PostgreSQL stores.

Each store applies, in one transaction, every migration newer than the version recorded
in ``usage_schema``, as Django and Alembic do: a new release adds a migration to the end
of `MIGRATIONS` and every existing ledger is upgraded when the gateway starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

#: The table of the ledger's rows.
TABLE = "usage_rows"
#: The one-row table that records which migrations were applied.
VERSION_TABLE = "usage_schema"


@attrs.frozen
class Dialect:
    """What differs between the SQL of two databases, as small expressions."""

    name: str
    #: The placeholder of the ``n``-th parameter (from 1).
    placeholder: Callable[[int], str]
    #: The integer type of the ``id`` column, with its key and generation.
    id_column: str
    #: The type of the flag columns.
    boolean: str
    #: ``ts`` (epoch seconds) as a ``YYYY-MM-DD`` day in UTC.
    day_of_ts: str
    #: ``ts`` rounded down to the hour, in epoch seconds.
    hour_of_ts: str

    def placeholders(self, count: int, start: int = 1) -> str:
        """``count`` comma-separated placeholders, numbered from ``start``."""
        return ", ".join(self.placeholder(i) for i in range(start, start + count))


SQLITE = Dialect(
    name="sqlite",
    placeholder=lambda n: "?",
    id_column="INTEGER PRIMARY KEY",
    boolean="INTEGER",
    day_of_ts="strftime('%Y-%m-%d', ts, 'unixepoch')",
    hour_of_ts="(CAST(ts AS INTEGER) / 3600) * 3600",
)

POSTGRES = Dialect(
    name="postgres",
    placeholder=lambda n: f"${n}",
    id_column="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    boolean="BOOLEAN",
    day_of_ts="to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    hour_of_ts="(floor(ts / 3600) * 3600)::bigint",
)


def _version_1(d: Dialect) -> list[str]:
    return [
        f"""CREATE TABLE {TABLE} (
            id {d.id_column},
            ts DOUBLE PRECISION NOT NULL,
            request_id TEXT NOT NULL,
            key_name TEXT,
            team TEXT,
            route TEXT NOT NULL,
            upstream TEXT,
            credential TEXT,
            model TEXT,
            status INTEGER NOT NULL,
            error_code TEXT,
            prompt_tokens BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            tokens_estimated {d.boolean} NOT NULL DEFAULT FALSE,
            duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
            ttfb_ms DOUBLE PRECISION,
            bytes_in BIGINT NOT NULL DEFAULT 0,
            bytes_out BIGINT NOT NULL DEFAULT 0
        )""",
        # Every report and the retention sweep select a time range (the latest errors
        # too, read backwards). One index only: each one more is paid on every row.
        f"CREATE INDEX {TABLE}_ts ON {TABLE} (ts)",
    ]


#: The schema's migrations, oldest first: version ``i + 1`` is ``MIGRATIONS[i]``.
MIGRATIONS: Sequence[Callable[[Dialect], list[str]]] = (_version_1,)

#: The version a ledger has once every migration was applied.
LATEST_VERSION = len(MIGRATIONS)


def create_version_table() -> str:
    """The statement that makes the version table when it is missing."""
    return f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER NOT NULL)"


def pending_statements(dialect: Dialect, current: int) -> list[str]:
    """The statements that upgrade a ledger at version ``current`` to `LATEST_VERSION`."""
    if current > LATEST_VERSION:
        raise ValueError(
            f"the usage ledger is at schema version {current}, newer than this gateway's "
            f"{LATEST_VERSION}: upgrade the gateway"
        )
    statements: list[str] = []
    for migration in MIGRATIONS[current:]:
        statements.extend(migration(dialect))
    return statements
