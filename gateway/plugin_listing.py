"""``gateway plugins``: every installed plugin, its description and its options.

Defaults are written as they would be in ``config.toml``: ``"1h"`` rather
than ``3600.0``, ``["*"]`` rather than a Python tuple.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Annotated, Any, get_args, get_origin

import attrs

from gateway.config_types import Bytes, Seconds
from gateway.plugin import Plugin
from gateway.registry import PluginLoadError, distribution_name, load_plugin_class
from gateway.units import format_duration, format_size

_LITERAL = re.compile(r"``(.+?)``")


def plugin_listing(installed: Mapping[str, EntryPoint]) -> str:
    """One block per plugin: name, distribution, description, and each option's default."""
    blocks = []
    for name in sorted(installed):
        entry_point = installed[name]
        lines = [f"{name}  ({distribution_name(entry_point)}; {entry_point.value})"]
        try:
            cls = load_plugin_class(name, dict(installed))
        except PluginLoadError as exc:
            lines.append(f"    cannot load: {exc}")
        else:
            lines.append(f"    {summary(cls.__doc__)}")
            lines += [f"    {field.name}: {describe_default(field)}" for field in fields(cls)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def summary(docstring: str | None) -> str:
    """A docstring's first line, without reStructuredText's literal quotes."""
    lines = (docstring or "").strip().splitlines()
    if not lines:
        return "(no description)"
    return _LITERAL.sub(r"\1", lines[0])


def fields(cls: type[Plugin]) -> tuple[attrs.Attribute, ...]:  # type: ignore[type-arg]
    """The plugin's config fields, their types resolved when they can be."""
    # A third-party annotation that cannot be resolved is shown as it is.
    with contextlib.suppress(Exception):
        attrs.resolve_types(cls.Config)
    return tuple(attrs.fields(cls.Config))


def describe_default(field: attrs.Attribute) -> str:  # type: ignore[type-arg]
    """A config field's default, as it would be written in TOML."""
    default: Any = field.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    # (A field with a range is ``Annotated[Seconds, Range(...)]``: the unit is inside.)
    unit = get_args(field.type)[0] if get_origin(field.type) is Annotated else field.type
    if unit is Seconds:
        return f'default "{format_duration(default)}"'
    if unit is Bytes:
        return f'default "{format_size(default)}"'
    return f"default {toml_value(default)}"


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (an inline table for a mapping)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)
