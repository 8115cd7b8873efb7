"""`SharedLedger`: one store and one writer per ledger location in a process, shared.

Every ``usage`` instance that names the same store (routes with their own settings, the
old and new config across a reload) shares one connection and one queue, counted by
users as ratelimit's in-process stores are.  The database is opened in the background
with back-off, so a gateway starts while its PostgreSQL is down: rows queue meanwhile
(and are dropped, counted, once the queue is full).  The retention sweep runs hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from gateway.api import get_logger, redact_url

from .store import UsageStore, UsageStoreError
from .stores import open_store
from .writer import LedgerWriter

logger = get_logger("gateway.usage")
RETENTION_EVERY = 3600.0
#: How long one attempt to open the store may take (a PostgreSQL that does not answer).
OPEN_TIMEOUT = 10.0
_OPEN_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)

_ledgers: dict[str, SharedLedger] = {}


class SharedLedger:
    """The store and writer of one location, open while at least one instance uses them."""

    def __init__(
        self,
        location: str,
        *,
        queue_size: int,
        batch_size: int,
        flush_interval: float,
        retention_days: int,
    ) -> None:
        self.location = location
        #: The location as logs and the admin page may show it: no password.
        self.shown = redact_url(location) if "://" in location else location
        self.retention_days = retention_days
        self.store: UsageStore = open_store(location)
        self.writer = LedgerWriter(
            self.store,
            capacity=queue_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            on_dropped=self._dropped,
        )
        #: Whether the store is open (the admin page reads it only then).
        self.ready = False
        self.users = 0
        self._task: asyncio.Task[None] | None = None

    async def started(self) -> None:
        """Open the store (once); if it cannot be opened now, keep trying in the background."""
        if self._task is not None:
            return
        first_wait: float | None = None
        try:
            await asyncio.wait_for(self.store.open(), OPEN_TIMEOUT)
        except (UsageStoreError, TimeoutError) as exc:
            first_wait = _OPEN_BACKOFF[0]
            self._unavailable(exc, first_wait)
        self._task = asyncio.get_running_loop().create_task(
            self._run(first_wait), name=f"usage-ledger {self.shown}"
        )

    async def release(self) -> None:
        """One user fewer; the last one writes what is queued and closes the store."""
        self.users -= 1
        if self.users > 0:
            return
        _ledgers.pop(self.location, None)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.ready:
            await self.writer.close()
        await self.store.close()
        self.ready = False

    def status(self) -> dict[str, Any]:
        """What the ledger did so far, for `Plugin.status` (no secret: the URL is redacted)."""
        return {
            "store": self.shown,
            "open": self.ready,
            "rows_written": self.writer.written,
            "rows_dropped": self.writer.dropped,
            "rows_queued": self.writer.queued,
        }

    async def _run(self, wait: float | None) -> None:
        attempt = 1
        while wait is not None:
            await asyncio.sleep(wait)
            try:
                await asyncio.wait_for(self.store.open(), OPEN_TIMEOUT)
                wait = None
            except (UsageStoreError, TimeoutError) as exc:
                wait = _OPEN_BACKOFF[min(attempt, len(_OPEN_BACKOFF) - 1)]
                attempt += 1
                self._unavailable(exc, wait)
        self.ready = True
        self.writer.start()
        logger.info("usage ledger open", store=self.shown)
        while self.retention_days > 0:
            await self._sweep()
            await asyncio.sleep(RETENTION_EVERY)

    def _unavailable(self, exc: BaseException, retry_in: float) -> None:
        error = str(exc) or "timed out"
        logger.error("usage ledger unavailable", store=self.shown, error=error, retry_in=retry_in)

    async def _sweep(self) -> None:
        try:
            deleted = await self.store.delete_older_than(self.retention_days)
        except UsageStoreError as exc:
            logger.warning("usage retention failed", store=self.shown, error=str(exc))
            return
        if deleted:
            logger.info(
                "usage rows expired", store=self.shown, rows=deleted, days=self.retention_days
            )

    def _dropped(self, count: int, reason: str) -> None:
        logger.warning(
            "usage rows dropped",
            store=self.shown,
            rows=count,
            reason=reason,
            total=self.writer.dropped,
        )


def open_ledger(
    location: str,
    *,
    queue_size: int,
    batch_size: int,
    flush_interval: float,
    retention_days: int,
) -> SharedLedger:
    """The process's ledger at ``location``, made on first use; one more user of it."""
    ledger = _ledgers.get(location)
    if ledger is None:
        ledger = _ledgers[location] = SharedLedger(
            location,
            queue_size=queue_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            retention_days=retention_days,
        )
    ledger.users += 1
    return ledger
