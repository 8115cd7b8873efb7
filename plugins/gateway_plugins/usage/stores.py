"""`open_store`: the ledger's store for a location, a PostgreSQL URL or a SQLite file.

It sits above both stores (which build on `store.UsageStore`), so the base class does
not import its own subclasses.
"""

from __future__ import annotations

from .store import UsageStore

#: The ledger's location when the config names none: a SQLite file in the working directory.
DEFAULT_LOCATION = "usage.sqlite3"


def open_store(location: str) -> UsageStore:
    """The store for ``location``: a ``postgresql://`` URL, else a SQLite file path.

    The store is not connected yet: call (or ``async with``) `UsageStore.open`.  The
    PostgreSQL driver is imported only when one is asked for.
    """
    if location.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore

        return PostgresStore(location)
    from .sqlite_store import SQLiteStore

    return SQLiteStore(location.removeprefix("sqlite://"))
