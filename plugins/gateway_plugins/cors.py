"""The ``cors`` plugin: answers CORS preflights and adds CORS headers to answers.

The gateway's policy is the only one a browser sees: on a request with an
``Origin``, the upstream's own ``Access-Control-*`` headers are removed (an
upstream's ``Access-Control-Allow-Origin: *`` must not let in an origin the
config refuses).
"""

from __future__ import annotations

import re

import attrs
from aiohttp import web
from multidict import CIMultiDict

from gateway.api import HEADER_TOKEN, Exchange, Forbidden, NonNegativeInt, Plugin

__all__ = ["Cors"]

_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9*_.-]+(?::[0-9]{1,5})?")
# The upstream headers that would compete with the gateway's policy.
_UPSTREAM_CORS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
)
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class Cors(Plugin):
    """Answers CORS preflights and adds CORS headers for the allowed origins.

    ``allow_origins`` holds exact origins (``https://app.example``), patterns
    (``https://*.example.com``: one or more subdomains) or ``*``.  With
    ``allow_credentials`` the request's origin is reflected, never ``*``.  ``*``
    in ``allow_methods`` or ``allow_headers`` reflects what the preflight asks.
    A preflight from an origin not allowed answers 403.
    """

    name = "cors"

    @attrs.frozen
    class Config:
        allow_origins: tuple[str, ...] = ("*",)
        allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        #: ``*`` reflects the preflight's ``Access-Control-Request-Headers``.
        allow_headers: tuple[str, ...] = ("*",)
        #: Response headers a page's script may read.
        expose_headers: tuple[str, ...] = (
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
        )
        allow_credentials: bool = False
        #: How long, in seconds, a browser may cache a preflight answer.
        max_age: NonNegativeInt = 600

    def __init__(self, config: Cors.Config) -> None:
        super().__init__(config)
        self._any_origin = "*" in config.allow_origins
        exact: set[str] = set()
        patterns: list[str] = []
        for i, origin in enumerate(config.allow_origins):
            normal = origin.lower().rstrip("/")
            if origin == "*":
                continue
            if not _ORIGIN.fullmatch(normal):
                raise ValueError(
                    f"allow_origins[{i}]: not an origin like 'https://app.example' ({origin!r})"
                )
            if "*" in normal:
                patterns.append(re.escape(normal).replace(r"\*", r"[a-z0-9-]+(?:\.[a-z0-9-]+)*"))
            else:
                exact.add(normal)
        self._exact = frozenset(exact)
        self._pattern = re.compile("|".join(patterns)) if patterns else None
        for key, values in (
            ("allow_methods", config.allow_methods),
            ("allow_headers", config.allow_headers),
            ("expose_headers", config.expose_headers),
        ):
            for i, value in enumerate(values):
                if not HEADER_TOKEN.fullmatch(value):
                    raise ValueError(f"{key}[{i}]: not a method or header name ({value!r})")
        self._reflect_methods = "*" in config.allow_methods
        self._methods = ", ".join(m.upper() for m in config.allow_methods)
        self._reflect_headers = "*" in config.allow_headers
        self._headers = ", ".join(config.allow_headers)
        self._expose = ", ".join(config.expose_headers)
        self._credentials = config.allow_credentials
        # The answer is the same for every origin only when it is a plain "*".
        self._wildcard = self._any_origin and not config.allow_credentials
        self._max_age = str(config.max_age)

    def allows(self, origin: str) -> bool:
        """Whether ``origin`` (an ``Origin`` header's value) is allowed."""
        if self._any_origin:
            return True
        normal = origin.lower()
        return normal in self._exact or (
            self._pattern is not None and self._pattern.fullmatch(normal) is not None
        )

    async def on_request(self, ex: Exchange) -> web.StreamResponse | None:
        if ex.request.method != "OPTIONS":
            return None
        headers = ex.request.headers
        origin = headers.get("Origin")
        method = headers.get("Access-Control-Request-Method")
        if origin is None or method is None:
            return None  # not a preflight: an ordinary OPTIONS request
        if not self.allows(origin):
            response = Forbidden(f"CORS: origin {origin[:200]!r} is not allowed").response()
            response.headers["Vary"] = _PREFLIGHT_VARY
            return response
        answer: CIMultiDict[str] = CIMultiDict()
        answer["Access-Control-Allow-Origin"] = "*" if self._wildcard else origin
        if self._credentials:
            answer["Access-Control-Allow-Credentials"] = "true"
        answer["Access-Control-Allow-Methods"] = method if self._reflect_methods else self._methods
        requested = headers.get("Access-Control-Request-Headers", "")
        allowed = requested if self._reflect_headers else self._headers
        if allowed:
            answer["Access-Control-Allow-Headers"] = allowed
        answer["Access-Control-Max-Age"] = self._max_age
        answer["Vary"] = _PREFLIGHT_VARY
        return web.Response(status=204, headers=answer)

    async def on_response(self, ex: Exchange) -> None:
        origin = ex.request.headers.get("Origin")
        headers = ex.response_headers
        if origin is None or headers is None:
            return
        for name in _UPSTREAM_CORS:
            headers.popall(name, None)
        if not self._wildcard:
            _add_vary(headers, "Origin")
        if not self.allows(origin):
            return
        headers["Access-Control-Allow-Origin"] = "*" if self._wildcard else origin
        if self._credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        if self._expose:
            headers["Access-Control-Expose-Headers"] = self._expose


def _add_vary(headers: CIMultiDict[str], name: str) -> None:
    """Add ``name`` to the ``Vary`` header unless it is there already."""
    present = [v.strip().lower() for value in headers.getall("Vary", ()) for v in value.split(",")]
    if name.lower() in present or "*" in present:
        return
    existing = ", ".join(headers.getall("Vary", ()))
    headers["Vary"] = f"{existing}, {name}" if existing else name
