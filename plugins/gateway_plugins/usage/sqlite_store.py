"""`SQLiteStore`: the default ledger, a SQLite file in WAL mode: `gateway run` needs nothing else.

sqlite3 blocks, so every call runs on one thread of its own (a connection is used by
one thread at a time, and writes are serialised as SQLite wants them), off the event
loop.  WAL mode lets `gateway usage` and the admin page read while the gateway writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from . import schema
from .row import COLUMNS, RowValues
from .schema import SQLITE
from .store import UsageStore, UsageStoreError

T = TypeVar("T")

# The sqlite3 module binds an exact int, float, str or bytes at once, but looks every
# other value up as an adapter (None, a bool, each item of a tuple subclass), and that
# lookup formats and discards an AttributeError: 32k of the 53k instructions a row cost
# (callgrind, bench/instructions.sh with_usage). So rows are bound as int, float and
# str only (`_bindable`): a missing text as the integer 0 (binding an int costs a
# quarter of binding even an empty text: no copy, no allocation) and a missing ttfb_ms
# as -1, which NULLIF turns back into NULL. No name, model or time to first byte is
# the integer 0 (those columns hold text) or -1.
_EMPTY_IS_NULL = ("key_name", "team", "upstream", "credential", "model", "error_code")
_NO_TEXT = 0
_NO_TTFB = -1.0


def _placeholder(column: str) -> str:
    if column in _EMPTY_IS_NULL:
        return f"NULLIF(?, {_NO_TEXT})"
    if column == "ttfb_ms":
        return f"NULLIF(?, {_NO_TTFB})"
    return "?"


_ROW_VALUES = f"({', '.join(_placeholder(column) for column in COLUMNS)})"
_INSERT_INTO = f"INSERT INTO {schema.TABLE} ({', '.join(COLUMNS)}) VALUES "

# A batch is inserted as a few INSERTs of many rows each (VALUES (...), (...), ...)
# rather than executemany's one per row, which pays per row for the statement's end
# (closing its cursors), a reset and a release of the GIL around each step: 25.9k ->
# 22.7k instructions a row on the store's thread (bench/instructions.sh with_usage,
# callgrind --separate-threads=yes, batches of about 100 rows). Chunks of
# a power of two rows (`_chunk_sizes`) keep the statements few, so sqlite3's cache of
# prepared statements holds them all; 32 rows of 17 values stay under 999, the fewest
# bound values a SQLite build allows.
_MOST_ROWS_PER_INSERT = 32


@functools.cache
def _insert(count: int) -> str:
    """The INSERT of ``count`` rows."""
    return _INSERT_INTO + ", ".join([_ROW_VALUES] * count)


def _chunk_sizes(count: int) -> Iterator[int]:
    """``count`` rows as chunks of `_MOST_ROWS_PER_INSERT` and smaller powers of two."""
    size = _MOST_ROWS_PER_INSERT
    while count:
        while size > count:
            size //= 2
        yield size
        count -= size


def _prepare_inserts(db: sqlite3.Connection) -> None:
    """Prepare every INSERT `_chunk_sizes` may ask for, now rather than in the first batches."""
    # executemany of no rows prepares the statement and keeps it in sqlite3's cache
    # without running it. Preparing the 32-row INSERT costs 0.8M instructions, which
    # bench/instructions.sh counted in its window (1.6k a request) when a batch of a
    # new size came then.
    count = _MOST_ROWS_PER_INSERT
    while count:
        db.executemany(_insert(count), [])
        count //= 2


def _bindable(rows: Sequence[RowValues]) -> list[Any]:
    """The values of ``rows``, one after the other, as `_insert` binds them fastest."""
    # One loop extending one list: a function called per row cost as much as the
    # conversion, and flattening a list of row tuples (itertools.chain) 1.2k
    # instructions a row more (callgrind).
    values: list[Any] = []
    add = values.extend
    for (ts, request_id, key_name, team, route, upstream, credential, model, status,
         error_code, prompt_tokens, completion_tokens, tokens_estimated, duration_ms,
         ttfb_ms, bytes_in, bytes_out) in rows:  # fmt: skip
        add((
            ts, request_id, key_name or _NO_TEXT, team or _NO_TEXT, route,
            upstream or _NO_TEXT, credential or _NO_TEXT, model or _NO_TEXT, status,
            error_code or _NO_TEXT, prompt_tokens, completion_tokens, 1 if tokens_estimated else 0,
            duration_ms, _NO_TTFB if ttfb_ms is None else ttfb_ms, bytes_in, bytes_out,
        ))  # fmt: skip
    return values


class SQLiteStore(UsageStore):
    """The ledger in the SQLite file at ``path`` (created with its folder if missing)."""

    dialect = SQLITE

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-sqlite")
        await self._run(self._connect)

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        connection, self._connection = self._connection, None
        if connection is not None:
            await asyncio.get_running_loop().run_in_executor(thread, connection.close)
        thread.shutdown(wait=True)

    async def insert_many(self, rows: Sequence[RowValues]) -> None:
        def insert(db: sqlite3.Connection) -> None:
            values = _bindable(rows)  # here, on the store's thread, off the event loop
            width = len(COLUMNS)
            start = 0
            with _transaction(db):
                for count in _chunk_sizes(len(rows)):
                    end = start + count * width
                    db.execute(_insert(count), values[start:end])
                    start = end

        await self._run_on_connection(insert)

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        def fetch(db: sqlite3.Connection) -> list[dict[str, Any]]:
            return [dict(record) for record in db.execute(sql, list(params))]

        return await self._run_on_connection(fetch)

    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        def execute(db: sqlite3.Connection) -> int:
            with _transaction(db):
                return db.execute(sql, list(params)).rowcount

        return await self._run_on_connection(execute)

    async def schema_version(self) -> int:
        return await self._run_on_connection(_version)

    def _connect(self) -> None:
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are the explicit ones of `_transaction`,
            # not sqlite3's implicit ones.
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode, NORMAL loses no committed transaction on a crash of the
            # process, only on a power cut: a ledger may lose its last batch then.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            _upgrade(db)
            _prepare_inserts(db)
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise UsageStoreError(f"cannot open the usage ledger {self.path}: {exc}") from exc
        self._connection = db

    async def _run_on_connection(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._connection is None:
                raise UsageStoreError("the usage ledger is not open")
            try:
                return work(self._connection)
            except sqlite3.Error as exc:
                raise UsageStoreError(f"usage ledger {self.path}: {exc}") from exc

        return await self._run(call)

    async def _run(self, work: Callable[[], T]) -> T:
        if self._thread is None:
            raise UsageStoreError("the usage ledger is not open")
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)


def _version(db: sqlite3.Connection) -> int:
    db.execute(schema.create_version_table())
    found = db.execute(f"SELECT MAX(version) FROM {schema.VERSION_TABLE}").fetchone()
    return int(found[0] or 0)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # BEGIN IMMEDIATE takes the write lock at once rather than at the first write, so
    # that two writers wait for each other (busy_timeout) instead of failing midway.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _upgrade(db: sqlite3.Connection) -> None:
    # One transaction: two gateways starting on one file upgrade one after the other,
    # the second finding nothing left to do.
    with _transaction(db):
        statements = schema.pending_statements(SQLITE, _version(db))
        for statement in statements:
            db.execute(statement)
        if statements:
            db.execute(f"DELETE FROM {schema.VERSION_TABLE}")
            db.execute(
                f"INSERT INTO {schema.VERSION_TABLE} (version) VALUES (?)",
                [schema.LATEST_VERSION],
            )
