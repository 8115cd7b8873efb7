"""`LedgerWriter`: rows go to the ledger in batches, off the request path, never blocking it.

A bounded queue between the requests and one writing task, as a log shipper does:
`record` is a ``put_nowait`` that never waits; when the queue is full the row is
dropped and counted, so a slow or broken database costs the requests nothing but
their ledger lines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .row import UsageRow
from .store import UsageStore, UsageStoreError

#: Rows refused by a full queue are reported (``on_dropped``) this often at most, in seconds.
REPORT_EVERY = 1.0


class LedgerWriter:
    """Writes the rows handed to `record` to ``store``, ``batch_size`` at a time at most.

    A batch is written as soon as it is full, or ``flush_interval`` seconds after its
    first row.  ``on_dropped(count, reason)`` is called, from the event loop, for lost
    rows: those the full queue refused (``"queue full"``, once every `REPORT_EVERY` at
    most) and each batch the store failed to write (the error's text).  `dropped`
    counts them all.
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
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_dropped = on_dropped
        #: Rows lost so far, refused by the full queue or in a batch that failed.
        self.dropped = 0
        #: Rows written so far.
        self.written = 0
        self._queue: asyncio.Queue[UsageRow] = asyncio.Queue(maxsize=capacity)
        self._refused = 0  # refused since the last report, reported by the writing task
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self._report: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Rows waiting to be written."""
        return self._queue.qsize()

    def record(self, row: UsageRow) -> None:
        """Queue ``row`` for the ledger; drop and count it when the queue is full."""
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self.dropped += 1
            self._refused += 1
            if self._report is None:
                # One report a second at most: a full queue under load must not turn
                # into a log line per request.
                self._report = asyncio.get_running_loop().call_later(
                    REPORT_EVERY, self._report_refused
                )

    def start(self) -> None:
        """Start the writing task (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._write_forever(), name="usage-ledger-writer"
            )

    async def close(self) -> None:
        """Write what is queued, then stop the writing task."""
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
        """Write every row queued so far (for tests and for shutdown)."""
        while not self._queue.empty():
            await self._write(self._take_batch([]))

    async def _write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.flush_interval
            while len(batch) < self.batch_size:
                self._take_batch(batch)
                remaining = deadline - loop.time()
                if len(batch) >= self.batch_size or remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            # Shielded: cancelled by `close`, the task stops waiting, but the batch is
            # still written whole (`close` awaits it), neither lost nor half-written.
            self._writing = asyncio.ensure_future(self._write(batch))
            await asyncio.shield(self._writing)
            self._writing = None

    def _take_batch(self, batch: list[UsageRow]) -> list[UsageRow]:
        while len(batch) < self.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write(self, batch: list[UsageRow]) -> None:
        if not batch:
            return
        try:
            await self.store.insert_many(batch)
        except UsageStoreError as exc:
            self.dropped += len(batch)
            self._notify(len(batch), str(exc))
        else:
            self.written += len(batch)

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
