"""Keeping secrets out of messages and logs: URLs with their passwords masked."""

from __future__ import annotations

from yarl import URL


def redact_url(text: str) -> str:
    """A URL with any password replaced by ``***`` (for messages and logs)."""
    try:
        url = URL(text)
    except ValueError:
        return "<unparsable URL>"
    return str(url.with_password("***")) if url.password else text
