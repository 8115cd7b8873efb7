"""Strict JSON for request bodies: what a plugin checks is what the upstream reads.

Python's ``json`` is lenient where gateways must not be: it accepts ``NaN``
and ``Infinity`` (not JSON), turns ``1e400`` into infinity, keeps the last of
duplicate keys (while another parser may keep the first: a key restricted to
one ``model`` could smuggle another), and recurses without a bound.  Every
such body is refused here, as a ``ValueError``.

What upstreams send is read leniently (`loads_upstream`), but nothing a third
party sends may escape as anything other than a ``ValueError``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range ({text[:20]}...)")
    return value


def loads(raw: bytes) -> Any:
    """Parse a body strictly; ``ValueError`` for anything a strict parser would refuse."""
    try:
        text = raw.decode("utf-8")  # strict: no surrogates smuggled in as bytes
        return json.loads(
            text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_float
        )
    except RecursionError:
        raise ValueError("nested too deeply") from None


def loads_upstream(raw: bytes | bytearray | str) -> Any:
    """Parse JSON an upstream sent, as ``json.loads`` does; ``ValueError`` for anything
    unreadable, nesting too deep for the parser (a ``RecursionError``) included."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Serialise a body; ``ValueError`` for what is not valid JSON in UTF-8."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError) as exc:
        raise ValueError(f"cannot be sent as JSON: {type(exc).__name__}") from None
