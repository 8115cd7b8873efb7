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


class Router:
    """Finds the route for a method and a normalised path."""

    def __init__(self, routes: Iterable[tuple[str, RouteConfig]]) -> None:
        self._routes = [
            (name, route, PathPattern(route.path), frozenset(route.methods))
            for name, route in routes
        ]

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The first route matching path and method, else the first matching the path only."""
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
