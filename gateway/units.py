"""Durations and sizes written as people write them: ``"30s"``, ``"8MiB"``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$")
_BYTES = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    None: 1,
}


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` or a number."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration ({value!r})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"not a duration ({value!r})")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f'not a duration ("{value}"); write e.g. "30s", "500ms", "5m"')
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_size(value: object) -> int:
    """Bytes from ``"8MiB"``, ``"16KiB"``, ``"1MB"`` or a whole number."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if not match or isinstance(value, bool | float):
        raise ValueError(f'not a size ("{value}"); write e.g. "8MiB", "16KiB", 1024')
    return int(match.group(1)) * _BYTES[match.group(2)]


def format_duration(seconds: float) -> str:
    """A duration as `parse_duration` reads it, in the largest unit that fits exactly.

    ``3600.0`` is ``"1h"``, ``90.0`` ``"90s"``, ``0.5`` ``"500ms"``.
    """
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        count = seconds / _SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{round(seconds * 1000, 3):g}ms"


def format_size(size: int) -> str:
    """A size as `parse_size` reads it, in the largest binary unit that fits exactly."""
    for unit in ("GiB", "MiB", "KiB"):
        if size >= _BYTES[unit] and size % _BYTES[unit] == 0:
            return f"{size // _BYTES[unit]}{unit}"
    return f"{size}B"
