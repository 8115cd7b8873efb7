"""Ledger rows for the usage tests: one request of alice's (team research) to openai."""

from __future__ import annotations

from gateway_plugins.usage.row import UsageRow

#: What a row has unless a test says otherwise.
TYPICAL: dict[str, object] = {
    "route": "openai",
    "status": 200,
    "key_name": "alice",
    "team": "research",
    "upstream": "openai",
    "credential": None,
    "model": None,
    "prompt_tokens": 10,
    "completion_tokens": 5,
}


def usage_row(ts: float, request_id: str, **fields: object) -> UsageRow:
    """A `TYPICAL` row at ``ts`` (epoch seconds), with ``fields`` changed."""
    return UsageRow(**{"ts": ts, "request_id": request_id, **TYPICAL, **fields})  # type: ignore[arg-type]
