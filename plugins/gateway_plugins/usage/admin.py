"""The read-only admin page and its JSON API, answered only to holders of an admin key.

Under the configured path (``/admin``, say):

- ``GET /admin``: the page (`page`), rendered on the server, refreshing itself;
- ``GET /admin/api/dashboard``: the document the page shows (`dashboard`), as JSON;
- ``GET /admin/api/usage?by=key&since=2026-11-01&until=...``: totals, as ``gateway usage``.

An admin key is sent as ``Authorization: Bearer <key>`` (scripts) or as the password of
HTTP Basic authentication (browsers ask for it); its SHA-256 is compared in constant
time against every configured hash.  Every answer, errors included, carries the strict
security headers of `SECURITY_HEADERS` and is never cached.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from gateway.api import Seconds, digests_match, error_response, key_digest

from .dashboard import LiveState, build_dashboard
from .page import CSP, render_page
from .reports import GROUPINGS
from .store import UsageStore, UsageStoreError
from .times import iso, parse_time, start_of_month

_SHA256 = re.compile(r"[0-9a-f]{64}")

#: Headers of every admin answer: no framing, no referrer, no sniffing, no caching.
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@attrs.frozen
class AdminKey:
    """``[plugins.usage.admin.keys.<name>]``: one admin key, by the hash of its secret."""

    sha256: str


@attrs.frozen
class AdminConfig:
    """``[plugins.usage.admin]``: the admin page, off while ``path`` is empty."""

    #: Where the page is served, such as ``"/admin"``; empty: no page (the default).
    path: str = ""
    #: Who may read it: ``keys.<name> = { sha256 = "..." }``, from ``gateway keygen``.
    keys: Mapping[str, AdminKey] = attrs.field(factory=dict)
    #: How often the page reloads itself; 0 never.
    refresh: Seconds = Seconds(30.0)
    #: How many of the latest errors the page lists.
    errors: int = 20

    def problems(self) -> list[str]:
        """What is wrong with this table, as ``check`` reports it."""
        found = []
        if self.path and (not self.path.startswith("/") or self.path.endswith("/")):
            found.append(f'admin.path: must start with "/" and not end with one ({self.path!r})')
        if self.path and not self.keys:
            found.append("admin.keys: the admin page needs at least one key (gateway keygen)")
        for name, key in self.keys.items():
            if not _SHA256.fullmatch(key.sha256):
                found.append(
                    f"admin.keys.{name}.sha256: not a hex SHA-256 digest (use `gateway keygen`)"
                )
        return found


class AdminPage:
    """Answers the admin requests, from the ledger and what ``live()`` says now."""

    def __init__(
        self,
        config: AdminConfig,
        store: Callable[[], UsageStore | None],
        live: Callable[[], Awaitable[LiveState]],
    ) -> None:
        self.config = config
        self.path = config.path
        self._digests = [key.sha256 for key in config.keys.values()]
        self._store = store
        self._live = live

    def serves(self, path: str) -> bool:
        """Whether ``path`` is the page's or under it."""
        return path == self.path or path.startswith(self.path + "/")

    async def answer(
        self, method: str, path: str, headers: CIMultiDictProxy[str], query: MultiMapping[str]
    ) -> web.Response:
        """The answer to one request under the page's path."""
        if not self._authorised(headers):
            return _error(
                401,
                "an admin key is required",
                "authentication_error",
                "unauthorized",
                {"WWW-Authenticate": 'Basic realm="gateway admin", charset="UTF-8"'},
            )
        if method not in ("GET", "HEAD"):
            return _error(
                405,
                "the admin page is read-only",
                "invalid_request_error",
                "method_not_allowed",
                {"Allow": "GET, HEAD"},
            )
        store = self._store()
        if store is None:
            return _error(503, "the usage ledger is not open", "server_error", "unavailable")
        sub = path[len(self.path) :]
        try:
            if sub in ("", "/"):
                document = await self._dashboard(store)
                api = f"{self.path}/api/dashboard"
                refresh = round(self.config.refresh)
                return _html(render_page(document, refresh=refresh, api_path=api))
            if sub == "/api/dashboard":
                return _json(await self._dashboard(store))
            if sub == "/api/usage":
                return await self._usage(store, query)
        except UsageStoreError:
            return _error(503, "the usage ledger cannot be read", "server_error", "unavailable")
        return _error(404, f"no admin page at {path}", "invalid_request_error", "not_found")

    async def _dashboard(self, store: UsageStore) -> dict[str, Any]:
        return await build_dashboard(
            store, await self._live(), time.time(), errors=self.config.errors
        )

    async def _usage(self, store: UsageStore, query: MultiMapping[str]) -> web.Response:
        now = time.time()
        by = query.get("by", "key")
        try:
            if by not in GROUPINGS:
                raise ValueError(f"by: choose one of {', '.join(GROUPINGS)}")
            since = parse_time(query["since"], now) if "since" in query else start_of_month(now)
            until = parse_time(query["until"], now) if "until" in query else now + 1
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error", "bad_request")
        totals = await store.totals(by, since, until)
        rows = [{by: t.group, **t.to_json()} for t in totals]
        for row in rows:
            del row["group"]
        return _json({"since": iso(since), "until": iso(until), "by": by, "rows": rows})

    def _authorised(self, headers: CIMultiDictProxy[str]) -> bool:
        presented = _presented_key(headers.get("Authorization", ""))
        if presented is None:
            return False
        digest = key_digest(presented)
        # Every stored hash is compared, whichever matches: the time taken says nothing.
        matches = [digests_match(digest, stored) for stored in self._digests]
        return any(matches)


def _presented_key(authorization: str) -> str | None:
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8", "surrogateescape")
        except (binascii.Error, ValueError):
            return None
        # user:password; the user name is not checked, the password is the key.
        _, colon, password = decoded.partition(":")
        return password if colon and password else None
    return None


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers=SECURITY_HEADERS)


def _json(document: Any) -> web.Response:
    return web.Response(
        text=json.dumps(document), content_type="application/json", headers=SECURITY_HEADERS
    )


def _error(
    status: int, message: str, type_: str, code: str, extra: Mapping[str, str] | None = None
) -> web.Response:
    return error_response(
        status, message, type_, code, headers={**SECURITY_HEADERS, **(extra or {})}
    )
