"""``${VAR}`` interpolation of config strings.

- ``${VAR}``: the variable's value; an error when it is not set.
- ``${VAR:-default}``: the default when the variable is unset or empty.
- ``${VAR-default}``: the default only when the variable is unset.
- ``${VAR:+word}``: ``word`` when the variable is set and not empty, else nothing
  (``${VAR+word}``: when it is set at all), as in the shell: a switch such as
  go-chatgpt-api's ``CONTINUE_SIGNAL``, on whatever its value, reads
  ``"${CONTINUE_SIGNAL:+true}"``.
- ``$$``: a literal ``$``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A ``${VAR}`` that cannot be resolved, or malformed ``${`` syntax."""


class InterpolationProblem(str):
    """A config problem line (``"$.key.path: ..."``) for a string that could not be interpolated.

    Its own type, so that later problems at the same key path (the raw ``${...}``
    left there fails every check after) can be told apart and dropped.
    """


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve every ``${...}`` in ``text`` from ``env``; defaults may nest."""
    try:
        return _expand(text, 0, env, nested=False)[0]
    except RecursionError:
        raise InterpolationError("${...} defaults nested too deeply") from None


def _expand(text: str, pos: int, env: Mapping[str, str], *, nested: bool) -> tuple[str, int]:
    """Expand from ``pos`` to the end (or, when ``nested``, to the closing brace)."""
    out: list[str] = []
    while pos < len(text):
        char = text[pos]
        if nested and char == "}":
            return "".join(out), pos
        if char != "$":
            out.append(char)
            pos += 1
        elif text.startswith("$$", pos):
            out.append("$")
            pos += 2
        elif text.startswith("${", pos):
            value, pos = _variable(text, pos + 2, env)
            out.append(value)
        else:
            out.append(char)
            pos += 1
    if nested:
        raise InterpolationError("unclosed ${ in a config string")
    return "".join(out), pos


def _variable(text: str, pos: int, env: Mapping[str, str]) -> tuple[str, int]:
    """Resolve ``NAME}``, ``NAME:-default}``, ``NAME-default}``, ``NAME:+word}`` or
    ``NAME+word}`` starting at ``pos``."""
    match = _NAME.match(text, pos)
    if match is None:
        raise InterpolationError("malformed ${...}: expected a variable name")
    name, pos = match.group(), match.end()
    value = env.get(name)
    if text.startswith("}", pos):
        if value is None:
            raise InterpolationError(f"environment variable {name} is not set")
        return value, pos + 1
    for operator in (":-", "-", ":+", "+"):
        if text.startswith(operator, pos):
            word, pos = _expand(text, pos + len(operator), env, nested=True)
            unset = not value if operator.startswith(":") else value is None
            if operator.endswith("+"):
                return ("" if unset else word), pos + 1
            return (word if unset else value or ""), pos + 1
    raise InterpolationError(f"malformed ${{{name}...}}: expected }}, :-, -, :+ or +")


def escape(text: str) -> str:
    """The inverse of `interpolate` for literal text: ``interpolate(escape(s)) == s``."""
    return text.replace("$", "$$")


def interpolate_tree(tree: Any, env: Mapping[str, str], path: str = "$") -> tuple[Any, list[str]]:
    """Interpolate every string in a parsed TOML tree; return it and the problems found."""
    problems: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str):
            try:
                return interpolate(node, env)
            except InterpolationError as exc:
                problems.append(InterpolationProblem(f"{where}: {exc}"))
                return node
        if isinstance(node, dict):
            return {key: walk(value, f"{where}.{key}") for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, f"{where}[{i}]") for i, value in enumerate(node)]
        return node

    return walk(tree, path), problems
