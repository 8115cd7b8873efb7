"""``usage``: one ledger row per request that reached a route, and the read-only admin page.

Put it early in the global pipeline, so that its ``on_complete`` runs after the other
plugins' (response-side hooks run in reverse order) and sees what they set: the
identity, the credential, the tokens::

    pipeline = ["access_log", "usage", "metrics", "cors", "auth", "ratelimit", "upstream_proxy"]

    [plugins.usage]
    store = "usage.sqlite3"        # or postgresql://user:password@host/db
    retention_days = 90

Rows are written off the request path (`LedgerWriter`); the page (`AdminPage`) is off
until ``[plugins.usage.admin] path`` is set and a route without upstream serves it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import attrs
from aiohttp import web

from gateway.api import (
    Exchange,
    GatewayContext,
    GatewayError,
    NonNegativeInt,
    Plugin,
    PositiveInt,
    PositiveSeconds,
    get_logger,
)

from .admin import AdminConfig, AdminPage
from .command import usage_report
from .dashboard import LiveState
from .ledgers import SharedLedger, open_ledger
from .live import live_state
from .row import RowValues
from .store import UsageStore, UsageStoreError
from .stores import DEFAULT_LOCATION

logger = get_logger("gateway.usage")
#: The ``Exchange.state`` key that marks a request the admin page answered: not a ledger row.
ADMIN_STATE = "usage.admin"
_CLIENT_GONE = (asyncio.CancelledError, ConnectionError)


class UsageLedger(Plugin):
    """Records who used what in a ledger (SQLite or PostgreSQL), and serves the admin page."""

    @attrs.frozen
    class Config:
        """``[plugins.usage]``."""

        #: The ledger: a SQLite file (made if missing) or a ``postgresql://`` URL.
        store: str = DEFAULT_LOCATION
        #: Rows older than this many days are deleted (hourly); 0 keeps them all.
        retention_days: NonNegativeInt = 0
        #: Rows waiting to be written; past this many, new rows are dropped and counted.
        queue_size: PositiveInt = 10_000
        #: Rows written in one transaction at most.
        batch_size: PositiveInt = 500
        #: A batch is written at the latest this long after its first row.
        flush_interval: PositiveSeconds = 1.0  # type: ignore[assignment]
        #: ``[plugins.usage.admin]``: the read-only page, off by default.
        admin: AdminConfig = attrs.field(factory=AdminConfig)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._ledger: SharedLedger | None = None
        self._context: GatewayContext | None = None
        self.admin = AdminPage(config.admin, self._store, self._live) if config.admin.path else None

    @staticmethod
    async def usage_report(
        location: str, *, by: str, since: str | None, until: str | None, output: str
    ) -> tuple[int, str]:
        """``gateway usage``: the exit status and the text to print (the report, or why not)."""
        try:
            return 0, await usage_report(location, by=by, since=since, until=until, output=output)
        except (UsageStoreError, ValueError) as exc:
            return 1, f"gateway usage: {exc}"

    def needs_usage(self) -> bool:
        """Every row has tokens: the gateway meters the answers of the routes it is on."""
        return True

    def uses(self, hook: str) -> bool:
        """``on_request`` only when this instance serves the admin page."""
        if hook == "on_request":
            return self.admin is not None
        return super().uses(hook)

    def check(self, config: Any) -> list[str]:
        return self.config.admin.problems()  # type: ignore[no-any-return]

    async def startup(self, context: GatewayContext) -> None:
        """Open (or share) the ledger; rows queue while the database is unreachable."""
        self._context = context
        c = self.config
        self._ledger = open_ledger(
            c.store,
            queue_size=c.queue_size,
            batch_size=c.batch_size,
            flush_interval=c.flush_interval,
            retention_days=c.retention_days,
        )
        await self._ledger.started()

    async def shutdown(self) -> None:
        """Write what is queued and close the ledger (when no other instance uses it)."""
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            await ledger.release()

    def status(self) -> dict[str, Any]:
        """The ledger's counters: rows written, dropped and waiting."""
        if self._ledger is None:
            return {}
        return self._ledger.status()

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        """Answer the admin page's requests; leave every other request alone."""
        assert self.admin is not None
        if not self.admin.serves(ex.path):
            return None
        ex.state[ADMIN_STATE] = True
        request = ex.request
        return await self.admin.answer(ex.method, ex.path, request.headers, request.query)

    async def on_complete(self, ex: Exchange, error: BaseException | None) -> None:
        """Queue the request's row (never waits: a full queue drops it)."""
        if self._ledger is None or ex.state.get(ADMIN_STATE):
            return
        self._ledger.writer.record(ledger_row(ex, error, time.perf_counter(), time.time()))

    def _store(self) -> UsageStore | None:
        return self._ledger.store if self._ledger is not None and self._ledger.ready else None

    async def _live(self) -> LiveState:
        assert self._context is not None
        return live_state(self._context)


def ledger_row(ex: Exchange, error: BaseException | None, now: float, wall: float) -> RowValues:
    """The ledger's row for a finished exchange (``now`` on ``perf_counter``, ``wall`` epoch).

    The values of its `UsageRow`, as a plain tuple (`RowValues`).
    """
    # One row is made per request, so this is written for speed (bench/instructions.sh
    # callgrind, this function: 13.0k instructions a row before, 5.2k after): a plain
    # tuple in `COLUMNS` order rather than UsageRow(...), without calls on the common
    # path (a call costs more than its body here).
    identity = ex.identity
    usage = ex.usage
    started = ex.started
    first_byte = ex.first_byte_at
    upstream = ex.upstream
    if error is None:  # the answer went out whole: what `_status` and `_error_code` say then
        status = ex.status if ex.status is not None else 200
        error_code = ex.error_code or None
    else:
        status = _status(ex, error)
        error_code = ex.error_code or _error_code(error)
    # Milliseconds to 2 decimals, rounded half up by float arithmetic alone: 0.8k
    # instructions for the two where round() took 1.3k each (callgrind).
    duration_ms = ((now - started) * 1e5 + 0.5) // 1.0 / 100.0
    ttfb_ms = ((first_byte - started) * 1e5 + 0.5) // 1.0 / 100.0 if first_byte else None
    return (
        wall - (now - started),  # ts
        ex.request_id,
        identity.name if identity is not None else None,  # key_name
        identity.team if identity is not None else None,  # team
        ex.route_name,
        upstream.name if upstream is not None else None,
        ex.credential,
        ex.model,
        status,
        error_code,
        usage.prompt_tokens if usage is not None else 0,
        usage.completion_tokens if usage is not None else 0,
        usage.estimated if usage is not None else False,  # tokens_estimated
        duration_ms,
        ttfb_ms,
        ex.bytes_in,
        ex.bytes_out,
    )


def _status(ex: Exchange, error: BaseException) -> int:
    """The status of an exchange that ended in ``error``."""
    if isinstance(error, _CLIENT_GONE):
        # What nginx logs for a client that went away before its answer ended.
        return 499
    if isinstance(error, GatewayError) and ex.first_byte_at is None:
        return error.status  # the gateway's own error answer
    if ex.status is not None:
        return ex.status  # what the client got, even if the body broke off later
    return 502


def _error_code(error: BaseException) -> str | None:
    if isinstance(error, GatewayError):
        return error.code
    if isinstance(error, _CLIENT_GONE):
        return "client_closed"
    return None
