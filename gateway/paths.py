"""Request paths: normalising them, encoding them again, and route path patterns.

Paths are normalised first (percent-decoding, ``.`` and ``..`` segments
resolved, repeated slashes merged), so what routing and limits see is exactly
what goes upstream.  A pattern such as ``/conversation/{id}`` captures one
segment per ``{name}``, and ``{name*}`` the rest of the path.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")
# Characters left as they are when a decoded path is encoded again for the upstream.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class PathPattern:
    """A compiled route path such as ``/conversation/{id}`` or ``/v1/{rest*}``."""

    __slots__ = ("names", "regex", "source")

    def __init__(self, source: str) -> None:
        if not source.startswith("/"):
            raise ValueError(f"a path must start with '/' ({source!r})")
        self.source = source
        self.names: frozenset[str] = frozenset()
        regex, position, names = "", 0, []
        for match in _PARAM.finditer(source):
            name, is_tail = match.group(1), bool(match.group(2))
            if is_tail and match.end() != len(source):
                raise ValueError(f"a {{{name}*}} tail may only end the path ({source!r})")
            if name in names:
                raise ValueError(f"parameter {name!r} appears twice ({source!r})")
            names.append(name)
            regex += re.escape(source[position : match.start()])
            regex += f"(?P<{name}>.*)" if is_tail else f"(?P<{name}>[^/]+)"
            position = match.end()
        leftover = source[position:]
        if "{" in leftover or "}" in leftover:
            raise ValueError(f"malformed parameter in {source!r}")
        # DOTALL: a decoded path may hold a newline (%0A); a tail must match it too.
        self.regex = re.compile(regex + re.escape(leftover) + r"\Z", re.DOTALL)
        self.names = frozenset(names)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path)
        return found.groupdict() if found else None

    @staticmethod
    def template_names(template: str) -> set[str]:
        return {m.group(1) for m in _PARAM.finditer(template)}

    @staticmethod
    def fill(template: str, params: dict[str, str]) -> str:
        """Put captured parameters into an upstream path template."""
        return _PARAM.sub(lambda m: params[m.group(1)], template)


def normalize_path(path: str) -> str:
    """Resolve ``.``/``..`` segments and merge repeated slashes in a decoded path."""
    if "//" not in path and "/." not in path:
        return path
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if path.endswith("/") and normal != "/":
        normal += "/"
    return normal


def encode_path(path: str) -> str:
    """Percent-encode a decoded path for the upstream request line."""
    return quote(path, safe=_PATH_SAFE)
