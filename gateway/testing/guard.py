"""The checks every simulated endpoint shares: recording, ``X-Sim-Status`` and bearer auth.

Each simulated upstream installs one `guard` middleware scoped to its path prefix, so
two simulators can share one application and still answer errors in their own format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.testing.recorder import Recorder, capture

SIM_STATUS = "X-Sim-Status"

ErrorBody = Callable[[int, str], dict[str, Any]]


@attrs.frozen
class Flavor:
    """How one simulated upstream scopes its routes and words its errors."""

    prefix: str  # e.g. "/backend-api" or "/v1"
    error_body: ErrorBody  # (status, message) -> JSON body
    unauthorized: str  # the message of a 401 for a missing bearer token

    def owns(self, path: str) -> bool:
        """Whether ``path`` belongs to this upstream."""
        return path == self.prefix or path.startswith(self.prefix + "/")

    def error(self, status: int, message: str, **headers: str) -> web.Response:
        """An error answer in this upstream's format."""
        return web.json_response(self.error_body(status, message), status=status, headers=headers)


def simulated_status(value: str) -> int | None:
    """The status an ``X-Sim-Status`` value asks for; ``None`` when it is not 400-599."""
    try:
        status = int(value.strip())
    except ValueError:
        return None
    return status if 400 <= status <= 599 else None


def simulated_error(flavor: Flavor, status: int) -> web.Response:
    """The answer to a request that asked for ``status`` (429 carries ``Retry-After: 1``)."""
    headers = {"Retry-After": "1"} if status == 429 else {}
    return flavor.error(status, f"simulated {status}", **headers)


def has_bearer(request: web.Request) -> bool:
    """Whether the request carries ``Authorization: Bearer <something>``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def guard(flavor: Flavor, recorder: Recorder | None) -> Middleware:
    """A middleware that records, then applies ``X-Sim-Status``, then requires a bearer token.

    Requests outside ``flavor.prefix`` pass through untouched. Routing errors (404, 405)
    inside it are answered in the upstream's format.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not flavor.owns(request.path):
            return await handler(request)
        if recorder is not None:
            recorder.add(await capture(request))
        if SIM_STATUS in request.headers:
            status = simulated_status(request.headers[SIM_STATUS])
            if status is None:
                return flavor.error(400, f"{SIM_STATUS} must be a status from 400 to 599")
            return simulated_error(flavor, status)
        if not has_bearer(request):
            return flavor.error(401, flavor.unauthorized)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
            return flavor.error(exc.status, exc.reason, **allow)

    return middleware
