"""A config made ready to serve: routes compiled, plugins loaded and configured.

A `Runtime` is immutable once built.  Hot reload builds a new one and swaps it
in; requests in flight keep the runtime they started with, and its plugins get
their shut-down hook once the last of those requests has ended.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Any

import structlog

from gateway.config import GatewayConfig, RouteConfig, parse_config_partly
from gateway.config_converter import structure
from gateway.config_problems import drop_consequences, join_path
from gateway.context import GatewayContext
from gateway.errors import ConfigError
from gateway.forwarder import Forwarder
from gateway.http_client import HttpClient
from gateway.pipeline import Pipeline
from gateway.plugin import Plugin
from gateway.registry import PluginLoadError, installed_plugins, load_plugin_class
from gateway.routing import Router

logger = structlog.get_logger("gateway")


def merge_tables(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, recursively for nested tables."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_tables(merged[key], value)
        else:
            merged[key] = value
    return merged


def route_plugin_names(config: GatewayConfig, route: RouteConfig) -> list[str]:
    """The plugins a route runs: the global pipeline less its skips, then its own."""
    return [n for n in config.pipeline if n not in route.skip] + list(route.pipeline)


class Runtime:
    """Everything needed to serve one config."""

    def __init__(
        self,
        config: GatewayConfig,
        router: Router,
        pipelines: dict[str, Pipeline],
        plugins: list[Plugin],
    ) -> None:
        self.config = config
        self.router = router
        self.pipelines = pipelines
        self.plugins = plugins
        self.forwarder = Forwarder()
        self.context = GatewayContext(
            config=config,
            http=HttpClient(self.forwarder, config.upstreams),
            proxies=self.forwarder.proxies,
            plugins=tuple(plugins),
            pipelines={name: pipeline.plugins for name, pipeline in pipelines.items()},
        )
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def startup(self) -> None:
        """Start every plugin (in pipeline order); a failure stops those already started."""
        started: list[Plugin] = []
        try:
            for plugin in self.plugins:
                await plugin.startup(self.context)
                started.append(plugin)
        except BaseException:
            for plugin in reversed(started):
                await _shutdown(plugin)
            await self.forwarder.close()
            raise

    async def shutdown(self) -> None:
        """Shut every plugin down (reverse order), then close upstream connections."""
        for plugin in reversed(self.plugins):
            await _shutdown(plugin)
        await self.forwarder.close()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request uses this runtime; ``False`` if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


async def _shutdown(plugin: Plugin) -> None:
    try:
        await plugin.shutdown()
    except Exception:
        logger.exception("plugin shutdown failed", plugin=plugin.name)


def build_runtime(config: GatewayConfig, installed: dict[str, EntryPoint] | None = None) -> Runtime:
    """Load and configure the plugins the config names; raise `ConfigError` with every problem."""
    installed = installed_plugins() if installed is None else installed
    problems: list[str] = []
    classes: dict[str, type[Plugin]] = {}

    def plugin_class(name: str, where: str) -> type[Plugin] | None:
        if name not in classes:
            try:
                classes[name] = load_plugin_class(name, installed)
            except PluginLoadError as exc:
                problems.append(f"{where}: {exc}")
                return None
        return classes[name]

    for i, name in enumerate(config.pipeline):
        plugin_class(name, f"$.pipeline[{i}]")
    for name in config.plugins:
        plugin_class(name, f"$.plugins.{name}")

    instances: dict[tuple[str, str], Plugin] = {}

    def instance(name: str, table: Mapping[str, Any], where: str) -> Plugin | None:
        cls = classes.get(name)
        if cls is None:
            return None
        key = (name, json.dumps(table, sort_keys=True, default=str))
        if key not in instances:
            plugin_config, found = structure(dict(table), cls.Config, where)
            if found:
                problems.extend(found)
                return None
            try:
                instances[key] = cls(plugin_config)
            except (ValueError, TypeError) as exc:
                problems.append(join_path(where, str(exc)))
                return None
        return instances[key]

    pipelines: dict[str, Pipeline] = {}
    for route_name, route in config.routes.items():
        where = f"$.routes.{route_name}"
        names = route_plugin_names(config, route)
        for i, name in enumerate(route.pipeline):
            plugin_class(name, f"{where}.pipeline[{i}]")
        for i, name in enumerate(route.skip):
            if name not in config.pipeline:
                problems.append(f"{where}.skip[{i}]: {name!r} is not in the global pipeline")
        for name in route.plugins:
            if name not in names:
                problems.append(
                    f"{where}.plugins.{name}: configured, but not in this route's pipeline"
                )
        plugins = []
        for name in names:
            table = merge_tables(config.plugins.get(name, {}), route.plugins.get(name, {}))
            source = f"{where}.plugins.{name}" if name in route.plugins else f"$.plugins.{name}"
            plugin = instance(name, table, source)
            if plugin is not None:
                plugins.append(plugin)
        pipelines[route_name] = Pipeline(plugins)
    # Plugins configured globally but used by no route are still checked.
    for name, global_table in config.plugins.items():
        instance(name, global_table, f"$.plugins.{name}")
    for (name, _), plugin in instances.items():
        try:
            found = plugin.check(config)
        except Exception as exc:  # a plugin's bug, or a config it did not foresee
            logger.exception("plugin check failed", plugin=name)
            found = [f"$.plugins.{name}: its config check failed: {exc!r}"]
        problems.extend(
            problem if problem.startswith("$") else join_path(f"$.plugins.{name}", problem)
            for problem in found
        )
    if problems:
        raise ConfigError(config.source, list(dict.fromkeys(problems)))
    used = {id(p) for pipeline in pipelines.values() for p in pipeline.plugins}
    plugins = [p for p in instances.values() if id(p) in used]
    return Runtime(config, Router(config.routes.items()), pipelines, plugins)


def load_runtime(text: str, source: str, env: Mapping[str, str] | None = None) -> Runtime:
    """Parse a config and build its runtime, reporting every problem of both at once."""
    config, problems = parse_config_partly(text, source, env)
    try:
        runtime = build_runtime(config)
    except ConfigError as exc:
        problems += [p for p in exc.problems if p not in problems]
    if problems:
        raise ConfigError(source, drop_consequences(problems))
    return runtime
