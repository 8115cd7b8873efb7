"""The ledger writer batches rows off the request path and drops, never blocks, when full."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from gateway_plugins.usage.row import UsageRow
from gateway_plugins.usage.sqlite_store import SQLiteStore
from gateway_plugins.usage.store import UsageStoreError
from gateway_plugins.usage.stores import open_store
from gateway_plugins.usage.writer import LedgerWriter
from tests.plugins.test_usage_store import T0, row


class RecordingStore(SQLiteStore):
    """A real SQLite ledger that remembers the size of each batch and can be held up."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def insert_many(self, rows: Sequence[UsageRow]) -> None:
        await self.gate.wait()
        if self.fail:
            raise UsageStoreError("disk full")
        self.batches.append(len(rows))
        await super().insert_many(rows)


async def test_rows_are_written_in_batches(tmp_path: Path) -> None:
    store = RecordingStore(str(tmp_path / "usage.sqlite3"))
    await store.open()
    writer = LedgerWriter(store, batch_size=4, flush_interval=60)
    writer.start()
    for i in range(10):
        writer.record(row(i))
    await writer.close()
    assert sum(store.batches) == 10 and max(store.batches) == 4
    assert len(store.batches) <= 4
    assert writer.written == 10 and writer.dropped == 0
    assert [r.ts - T0 for r in await store.rows(0, T0 + 60)] == list(range(10))
    await store.close()


async def test_a_partial_batch_is_written_after_the_flush_interval(tmp_path: Path) -> None:
    async with open_store(str(tmp_path / "usage.sqlite3")) as store:
        writer = LedgerWriter(store, batch_size=100, flush_interval=0.05)
        writer.start()
        writer.record(row(0))
        for _ in range(200):  # bounded: 10 s at most
            if writer.written:
                break
            await asyncio.sleep(0.05)
        assert writer.written == 1
        assert len(await store.rows(0, T0 + 60)) == 1
        await writer.close()


async def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    store = RecordingStore(str(tmp_path / "usage.sqlite3"))
    await store.open()
    reports: list[tuple[int, str]] = []
    writer = LedgerWriter(
        store,
        capacity=5,
        batch_size=5,
        flush_interval=0,
        on_dropped=lambda count, reason: reports.append((count, reason)),
    )
    store.gate.clear()  # the database hangs
    writer.start()
    writer.record(row(0))
    await asyncio.sleep(0)  # the writer takes the first row and waits on the database
    for i in range(1, 20):
        writer.record(row(i))  # returns at once, whatever the queue holds
    assert writer.dropped == 14
    store.gate.set()
    await writer.close()
    assert writer.written == 6
    assert sum(count for count, _ in reports) == 14
    assert {reason for _, reason in reports} == {"queue full"}
    await store.close()


async def test_a_failed_batch_is_counted_as_dropped(tmp_path: Path) -> None:
    store = RecordingStore(str(tmp_path / "usage.sqlite3"))
    await store.open()
    reports: list[tuple[int, str]] = []
    writer = LedgerWriter(store, on_dropped=lambda count, reason: reports.append((count, reason)))
    store.fail = True
    for i in range(3):
        writer.record(row(i))
    await writer.close()
    assert (writer.dropped, writer.written) == (3, 0)
    assert reports == [(3, "disk full")]
    await store.close()
