"""Route matching: the first route whose path pattern and methods match wins.

Routes are tried in the order the config lists them; paths are matched once
normalised (`gateway.paths`).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from gateway.config import RouteConfig
from gateway.paths import PathPattern


@attrs.frozen
class RouteMatch:
    name: str
    route: RouteConfig
    params: dict[str, str]
    method_allowed: bool


#: How many (method, path) pairs a router remembers the route of.  The shipped
#: config tries a dozen patterns for a ``/v1`` path, about 10k instructions a
#: request (callgrind); a client's paths are few, but bounded all the same.
REMEMBERED = 1024


class Router:
    """Finds the route for a method and a normalised path (remembering the last ones)."""

    def __init__(self, routes: Iterable[tuple[str, RouteConfig]]) -> None:
        self._routes = [
            (name, route, PathPattern(route.path), frozenset(route.methods))
            for name, route in routes
        ]
        self._seen: dict[tuple[str, str], RouteMatch | None] = {}

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The first route matching path and method, else the first matching the path only.

        The same object for the same pair while remembered: its ``params`` are not
        to be changed (the exchange gets a copy).
        """
        key = (method, path)
        try:
            return self._seen[key]
        except KeyError:
            pass
        found = self._find(method, path)
        if len(self._seen) >= REMEMBERED:
            self._seen.clear()  # (simpler than an LRU, and rare: paths repeat)
        self._seen[key] = found
        return found

    def _find(self, method: str, path: str) -> RouteMatch | None:
        path_only: RouteMatch | None = None
        for name, route, pattern, methods in self._routes:
            params = pattern.match(path)
            if params is None:
                continue
            if "*" in methods or method in methods or (method == "HEAD" and "GET" in methods):
                return RouteMatch(name, route, params, True)
            if path_only is None:
                path_only = RouteMatch(name, route, params, False)
        return path_only

    def allowed_methods(self, path: str) -> list[str]:
        """Every method some route accepts for ``path`` (for ``Allow`` on a 405)."""
        methods: set[str] = set()
        for _, _, pattern, route_methods in self._routes:
            if pattern.match(path) is not None:
                methods.update(route_methods)
        return sorted(methods)
