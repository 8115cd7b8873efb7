"""Finding and loading plugins from the ``gateway.plugins`` entry-point group.

Built-in plugins are declared in the project's own ``pyproject.toml`` exactly as
third-party ones are, so there is one loading path.  A plugin's code is imported
only when the config names it.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from gateway.plugin import Plugin

GROUP = "gateway.plugins"


class PluginLoadError(Exception):
    """A named plugin that is not installed or does not load."""


def installed_plugins() -> dict[str, EntryPoint]:
    """Every plugin entry point installed, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_plugin_class(name: str, installed: dict[str, EntryPoint] | None = None) -> type[Plugin]:
    """Import the plugin class registered as ``name``."""
    installed = installed_plugins() if installed is None else installed
    entry_point = installed.get(name)
    if entry_point is None:
        known = ", ".join(sorted(installed)) or "none"
        raise PluginLoadError(f"unknown plugin {name!r} (installed: {known})")
    try:
        cls = entry_point.load()
    except Exception as exc:  # a broken third-party package must not crash `check`
        raise PluginLoadError(f"plugin {name!r} failed to load: {exc!r}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginLoadError(f"plugin {name!r} ({entry_point.value}) is not a Plugin subclass")
    # One class may serve under several names; each gets its own subclass name.
    if cls.name == name:
        return cls
    return type(cls.__name__, (cls,), {"name": name, "__doc__": cls.__doc__})


def distribution_name(entry_point: EntryPoint) -> str:
    """The distribution an entry point comes from (``?`` when unknown)."""
    dist = getattr(entry_point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "?"
