"""`LedgerWriter`: rows go to the ledger in batches, off the request path, never blocking it.

A bounded buffer between the requests and one writing task, as a log shipper does:
`record` appends to a list and never waits; when the buffer is full the row is
dropped and counted, so a slow or broken database costs the requests nothing but
their ledger lines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .row import RowValues
from .store import UsageStore, UsageStoreError

#: Rows refused by a full buffer are reported (``on_dropped``) this often at most, in seconds.
REPORT_EVERY = 1.0


class LedgerWriter:
    """Writes the rows handed to `record` to ``store``, ``batch_size`` at a time at most.

    A batch is written as soon as it is full, or ``flush_interval`` seconds after its
    first row; rows that came meanwhile wait for the next batch, so a busy ledger
    writes full batches.  ``on_dropped(count, reason)`` is called, from the event loop,
    for lost rows: those the full buffer refused (``"queue full"``, once every
    `REPORT_EVERY` at most) and each batch the store failed to write (the error's
    text).  `dropped` counts them all.
    """

    def __init__(
        self,
        store: UsageStore,
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        on_dropped: Callable[[int, str], None] | None = None,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_dropped = on_dropped
        #: Rows lost so far, refused by the full buffer or in a batch that failed.
        self.dropped = 0
        #: Rows written so far.
        self.written = 0
        # A plain list rather than an asyncio.Queue: a queue wakes the writing task for
        # every row (a future and a task step per request); `record` wakes it only when
        # the rows it waits for are there (`_wait_for_rows`), about once per batch.
        self._rows: list[RowValues] = []
        self._wake_at = 1  # how many buffered rows wake the waiting task
        self._waiter: asyncio.Future[None] | None = None
        self._refused = 0  # refused since the last report, reported by the writing task
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._report: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Rows waiting to be written."""
        return len(self._rows)

    def record(self, row: RowValues) -> None:
        """Buffer ``row`` for the ledger; drop and count it when the buffer is full."""
        rows = self._rows
        if len(rows) >= self.capacity:
            self._refuse()
            return
        rows.append(row)
        if self._waiter is not None and len(rows) >= self._wake_at:
            _resolve(self._waiter)

    def start(self) -> None:
        """Start the writing task (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._write_forever(), name="usage-ledger-writer"
            )

    async def close(self) -> None:
        """Write what is buffered, then stop the writing task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writing is not None:  # the batch the task was writing when cancelled
            await self._writing
        await self.flush()
        self._report_refused()

    async def flush(self) -> None:
        """Write every row buffered so far (for tests and for shutdown)."""
        while self._rows:
            await self._write(self._take_batch())

    async def _write_forever(self) -> None:
        while True:
            await self._wait_for_rows(1, None)
            await self._wait_for_rows(self.batch_size, self.flush_interval)
            # Shielded: cancelled by `close`, the task stops waiting, but the batch is
            # still written whole (`close` awaits it), neither lost nor half-written.
            self._writing = asyncio.ensure_future(self._write(self._take_batch()))
            await asyncio.shield(self._writing)
            self._writing = None

    async def _wait_for_rows(self, count: int, timeout: float | None) -> None:
        """Return once ``count`` rows are buffered, or after ``timeout`` seconds."""
        if len(self._rows) >= count or timeout == 0:
            return
        loop = asyncio.get_running_loop()
        self._wake_at = count
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _take_batch(self) -> list[RowValues]:
        batch = self._rows[: self.batch_size]
        del self._rows[: self.batch_size]
        return batch

    async def _write(self, batch: list[RowValues]) -> None:
        if not batch:
            return
        try:
            await self.store.insert_many(batch)
        except UsageStoreError as exc:
            self.dropped += len(batch)
            self._notify(len(batch), str(exc))
        else:
            self.written += len(batch)

    def _refuse(self) -> None:
        self.dropped += 1
        self._refused += 1
        if self._report is None:
            # One report a second at most: a full buffer under load must not turn into
            # a log line per request.
            self._report = asyncio.get_running_loop().call_later(REPORT_EVERY, self._report_refused)

    def _report_refused(self) -> None:
        if self._report is not None:
            self._report.cancel()
            self._report = None
        refused, self._refused = self._refused, 0
        if refused:
            self._notify(refused, "queue full")

    def _notify(self, count: int, reason: str) -> None:
        if self.on_dropped is not None:
            self.on_dropped(count, reason)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
