"""`UsageRow`: one line of the usage ledger, one per request that reached a route."""

from __future__ import annotations

from typing import Any, NamedTuple


class UsageRow(NamedTuple):
    """What one request used, as the ledger keeps it.

    A named tuple, in `COLUMNS` order: one is made per request, and the stores insert it
    as it is (about half the CPU of a frozen attrs class of 17 fields).

    Names only, never secrets: ``key_name`` is the client key's name in the config,
    ``credential`` the name of the pooled upstream credential.  ``tokens_estimated``
    says the token counts were counted by the gateway rather than reported by the
    upstream's ``usage``.
    """

    #: When the request arrived, in seconds since the epoch (UTC).
    ts: float
    request_id: str
    key_name: str | None
    team: str | None
    route: str
    upstream: str | None
    credential: str | None
    model: str | None
    status: int
    error_code: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    duration_ms: float = 0.0
    #: Time to the first byte of the answer; ``None`` when none was sent.
    ttfb_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0

    @classmethod
    def from_record(cls, record: Any) -> UsageRow:
        """A row from a database record that maps column names to values."""
        values = {column: record[column] for column in COLUMNS}
        values["tokens_estimated"] = bool(values["tokens_estimated"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-able mapping (column name to value)."""
        return self._asdict()


#: The ledger's columns, in the order rows are written (the ``id`` column is the store's).
COLUMNS: tuple[str, ...] = UsageRow._fields


#: A row as the ledger's writer and stores take it: its values in `COLUMNS` order, a
#: `UsageRow` or the plain tuple `ledger_row` makes, once per request (building the
#: named tuple instead cost 1.8k instructions more a request, callgrind).
RowValues = tuple[Any, ...]
