"""`UsageRow`: one line of the usage ledger, one per request that reached a route."""

from __future__ import annotations

from typing import Any

import attrs

#: The ledger's columns, in the order rows are written (the ``id`` column is the store's).
COLUMNS = (
    "ts",
    "request_id",
    "key_name",
    "team",
    "route",
    "upstream",
    "credential",
    "model",
    "status",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "tokens_estimated",
    "duration_ms",
    "ttfb_ms",
    "bytes_in",
    "bytes_out",
)


@attrs.frozen
class UsageRow:
    """What one request used, as the ledger keeps it.

    Names only, never secrets: ``key_name`` is the client key's name in the config,
    ``credential`` the name of the pooled upstream credential.  ``tokens_estimated``
    says the token counts were counted by the gateway rather than reported by the
    upstream's ``usage``.
    """

    #: When the request arrived, in seconds since the epoch (UTC).
    ts: float
    request_id: str
    route: str
    status: int
    key_name: str | None = None
    team: str | None = None
    upstream: str | None = None
    credential: str | None = None
    model: str | None = None
    error_code: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    duration_ms: float = 0.0
    #: Time to the first byte of the answer; ``None`` when none was sent.
    ttfb_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0

    def values(self) -> tuple[Any, ...]:
        """The row's values in `COLUMNS` order, as the stores insert them."""
        return tuple(getattr(self, column) for column in COLUMNS)

    @classmethod
    def from_record(cls, record: Any) -> UsageRow:
        """A row from a database record that maps column names to values."""
        values = {column: record[column] for column in COLUMNS}
        values["tokens_estimated"] = bool(values["tokens_estimated"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-able mapping (column name to value)."""
        return attrs.asdict(self)
