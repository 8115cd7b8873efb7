"""Dotted paths into JSON documents, for the ``rewrite`` plugin's body rules.

A path is a key followed by ``.key``, ``[N]`` (a list index, negative from the
end) and ``[*]`` (every element of a list) steps: ``messages[*].author.role``.
Each operation walks only what exists and skips values of the wrong type, so a
rule never fails on a body it does not fit; `JsonPath.set_default` and
`JsonPath.force` create missing objects, but only below elements that exist.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

__all__ = ["JsonPath", "json_equal"]

_KEY = re.compile(r"[^.\[\]]+")
_STEP = re.compile(r"\.([^.\[\]]+)|\[(\*|-?[0-9]+)\]")
_EVERY = "*"

# A step is a key (str), an index (int) or every element (None).
Step = str | int | None
# What an operation does at the last step: to a key of an object, or to some
# elements of a list.  Each returns whether it changed anything.
KeyOp = Callable[[dict[str, Any], str], bool]
ItemsOp = Callable[[list[Any], list[int]], bool]


class JsonPath:
    """One parsed path; raises ``ValueError`` when the text is not one."""

    __slots__ = ("steps", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        first = _KEY.match(text)
        if first is None:
            raise ValueError(f"JSON path {text!r} must start with a key")
        steps: list[Step] = [first.group()]
        position = first.end()
        while position < len(text):
            match = _STEP.match(text, position)
            if match is None:
                raise ValueError(f"JSON path {text!r} is malformed at {text[position:]!r}")
            key, index = match.groups()
            steps.append(key if key is not None else None if index == _EVERY else int(index))
            position = match.end()
        self.steps: tuple[Step, ...] = tuple(steps)

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def set_default(self, root: Any, value: Any) -> bool:
        """Set ``value`` where the path is missing; keep what is there."""

        def at_key(node: dict[str, Any], key: str) -> bool:
            if key in node:
                return False
            node[key] = copy.deepcopy(value)
            return True

        return self._apply(root, 0, at_key, lambda items, indexes: False, create=True)

    def force(self, root: Any, value: Any) -> bool:
        """Set ``value`` at the path, whatever is there."""

        def at_key(node: dict[str, Any], key: str) -> bool:
            if key in node and json_equal(node[key], value):
                return False
            node[key] = copy.deepcopy(value)
            return True

        def at_items(items: list[Any], indexes: list[int]) -> bool:
            changed = [i for i in indexes if not json_equal(items[i], value)]
            for i in changed:
                items[i] = copy.deepcopy(value)
            return bool(changed)

        return self._apply(root, 0, at_key, at_items, create=True)

    def remove(self, root: Any) -> bool:
        """Delete the key or the list elements the path names."""

        def at_key(node: dict[str, Any], key: str) -> bool:
            return node.pop(key, _MISSING) is not _MISSING

        def at_items(items: list[Any], indexes: list[int]) -> bool:
            for i in sorted(indexes, reverse=True):
                del items[i]
            return bool(indexes)

        return self._apply(root, 0, at_key, at_items, create=False)

    def empty_to_null(self, root: Any) -> bool:
        """Replace an empty string at the path with ``None``."""

        def at_key(node: dict[str, Any], key: str) -> bool:
            if node.get(key) != "":
                return False
            node[key] = None
            return True

        def at_items(items: list[Any], indexes: list[int]) -> bool:
            empty = [i for i in indexes if items[i] == ""]
            for i in empty:
                items[i] = None
            return bool(empty)

        return self._apply(root, 0, at_key, at_items, create=False)

    def _apply(self, node: Any, depth: int, at_key: KeyOp, at_items: ItemsOp, create: bool) -> bool:
        step = self.steps[depth]
        last = depth == len(self.steps) - 1
        if isinstance(step, str):
            if not isinstance(node, dict):
                return False
            if last:
                return at_key(node, step)
            if step in node:
                return self._apply(node[step], depth + 1, at_key, at_items, create)
            if create and isinstance(self.steps[depth + 1], str):
                # Built aside and attached only if the rest of the path sets something.
                child: dict[str, Any] = {}
                if self._apply(child, depth + 1, at_key, at_items, create):
                    node[step] = child
                    return True
            return False
        if not isinstance(node, list):
            return False
        if step is None:
            indexes = list(range(len(node)))
        elif -len(node) <= step < len(node):
            indexes = [step % len(node)]
        else:
            return False
        if last:
            return at_items(node, indexes)
        changed = False
        for i in indexes:
            changed = self._apply(node[i], depth + 1, at_key, at_items, create) or changed
        return changed


_MISSING: Any = object()


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: ``True`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)
