"""Upstream answers passed on to the client as they came.

aiohttp gives a response with a body and no ``Content-Type`` the type
``application/octet-stream``: right for a server that made the body, wrong
for a proxy, whose client should see that the upstream named no type (and sniff
or refuse it as it would have).  These responses keep the upstream's choice.
"""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web


class UpstreamStream(web.StreamResponse):
    """An upstream's answer, streamed; with no ``Content-Type`` if it had none."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._untyped = hdrs.CONTENT_TYPE not in self.headers

    async def _write_headers(self) -> None:
        # (aiohttp sets its default while preparing the head, just before this.)
        if self._untyped:
            self.headers.popall(hdrs.CONTENT_TYPE, None)
        await super()._write_headers()


class UpstreamWhole(UpstreamStream, web.Response):
    """An upstream's small answer, sent in one write; with no invented ``Content-Type``."""
