"""The config: frozen attrs classes structured from TOML by cattrs.

Unknown keys are errors (typos must not pass silently), every string may use
``${VAR}`` interpolation, durations and sizes read as people write them, and
every problem is reported at once with its key path::

    config.toml: $.upstreams.chatgpt.url: not a URL ("htp:/x")
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import attrs

from gateway.config_converter import structure, structure_partly
from gateway.config_problems import drop_consequences, unknown_key
from gateway.config_types import (
    Bytes,
    HttpUrl,
    Methods,
    NonNegativeInt,
    PositiveInt,
    PositiveSeconds,
    ProxyUrl,
    Range,
    Seconds,
)
from gateway.errors import ConfigError
from gateway.interpolate import interpolate_tree
from gateway.paths import PathPattern


@attrs.frozen
class ServerConfig:
    """``[server]``: where and how the gateway listens."""

    host: str = "0.0.0.0"
    port: Annotated[int, Range(1, 65535)] = 8080
    #: How many proxies in front of the gateway may be believed in ``X-Forwarded-For``.
    trusted_hops: NonNegativeInt = 0
    max_body_size: Bytes = Bytes(8 * 1024 * 1024)
    #: (Below 1 KiB no ordinary request head would fit.)
    max_header_size: Annotated[Bytes, Range(1024)] = Bytes(16 * 1024)
    #: The longest server-sent event a plugin's event hook is given (a longer one ends
    #: the stream with an error event): the most one stream's parser holds.
    max_event_size: Annotated[Bytes, Range(1024)] = Bytes(4 * 1024 * 1024)
    #: The most client connections open at once; more are answered 503 and closed.
    #: 0: half the open-file limit (each proxied request needs two descriptors).
    max_client_connections: NonNegativeInt = 0
    #: How long a client may stay silent: before its request head is complete, between
    #: bytes of its body, and between requests on a kept-alive connection.
    client_idle_timeout: PositiveSeconds = Seconds(60.0)
    drain_timeout: Seconds = Seconds(30.0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"


@attrs.frozen
class TlsConfig:
    """``[upstreams.<name>.tls]``: how the gateway checks the upstream, and shows itself.

    Without it, the system's CAs are trusted (``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` point OpenSSL elsewhere for every upstream at once).
    """

    #: PEM file of the CAs to trust for this upstream, instead of the system's (private CAs).
    ca_file: str | None = None
    #: PEM files of the gateway's own certificate and key, for upstreams that ask (mTLS);
    #: the key may sit in ``cert_file`` itself.
    cert_file: str | None = None
    key_file: str | None = None
    #: Verify the upstream's certificate and name; off only when said so.
    verify: bool = True

    def __attrs_post_init__(self) -> None:
        from gateway.transport.tls import tls_context

        if self.ca_file or self.cert_file or self.key_file:
            tls_context(self)  # a file that cannot be used is a config error, said now


@attrs.frozen
class UpstreamConfig:
    """``[upstreams.<name>]``: a service the gateway forwards to."""

    url: HttpUrl
    #: Outbound proxies, tried in rotation (the ``upstream_proxy`` plugin chooses).
    proxy: tuple[ProxyUrl, ...] = ()
    connect_timeout: PositiveSeconds = Seconds(10.0)
    #: The longest silence allowed between upstream bytes (and before the head).
    idle_timeout: PositiveSeconds = Seconds(300.0)
    #: Headers added to every request to this upstream.
    headers: Mapping[str, str] = attrs.field(factory=dict)
    #: Send the client's address (``X-Forwarded-For``) upstream, and let through client
    #: headers that identify it (``gateway.headers.identifies_client``).  Off for third parties.
    forward_client_address: bool = False
    #: The allow-list mode: when set, only these client headers (and ``Content-*``) go upstream.
    forward_headers: tuple[str, ...] = ()
    #: The most connections open to this upstream at once (per proxy): a stream holds
    #: one for its whole life, so this caps concurrent streams; more wait their turn.
    max_connections: PositiveInt = 10_000
    #: How long an idle pooled connection to this upstream is kept for reuse.
    keepalive_timeout: Seconds = Seconds(15.0)
    #: TLS settings for an ``https`` upstream.
    tls: TlsConfig = attrs.field(factory=TlsConfig)
    #: Set by the loader: the key of this upstream in ``[upstreams]``.
    name: str = ""


@attrs.frozen
class RouteConfig:
    """``[routes.<name>]``: which requests go where, through which plugins."""

    path: str
    methods: Methods = Methods(("*",))
    #: The upstream to forward to; none for routes a plugin answers itself.
    upstream: str | None = None
    #: The upstream path, with the path pattern's ``{name}`` parameters; default: the path.
    upstream_path: str | None = None
    #: Plugins run after the global pipeline for this route only.
    pipeline: tuple[str, ...] = ()
    #: Global pipeline plugins this route does without.
    skip: tuple[str, ...] = ()
    #: Per-route plugin config, merged over ``[plugins.<name>]``.
    plugins: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: Forward the client's ``Cookie`` header upstream.
    forward_cookies: bool = False
    #: Per-route overrides of the upstream's timeouts.
    connect_timeout: PositiveSeconds | None = None
    idle_timeout: PositiveSeconds | None = None


@attrs.frozen
class GatewayConfig:
    """The whole config file."""

    server: ServerConfig = attrs.field(factory=ServerConfig)
    #: Plugins every route runs, in order.
    pipeline: tuple[str, ...] = ()
    #: Plugin config tables, structured by each plugin's own ``Config`` class.
    plugins: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    upstreams: Mapping[str, UpstreamConfig] = attrs.field(factory=dict)
    routes: Mapping[str, RouteConfig] = attrs.field(factory=dict)
    #: Where the config came from, for messages.
    source: str = "<default>"


def parse_config(
    text: str, source: str = "config.toml", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Parse and check a config's own structure (plugins are checked by `build_runtime`).

    Raises `ConfigError` listing every problem found.
    """
    config, problems = parse_config_partly(text, source, env)
    if problems:
        raise ConfigError(source, problems)
    return config


def parse_config_partly(
    text: str, source: str = "config.toml", env: Mapping[str, str] | None = None
) -> tuple[GatewayConfig, list[str]]:
    """Parse what is valid of a config and list the problems with the rest.

    The partial config lets the plugin checks run too, so that every problem
    of a file is reported at once.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return GatewayConfig(source=source), [f"not valid TOML: {exc}"]
    raw, problems = interpolate_tree(raw, os.environ if env is None else env)
    top_level = ["server", "pipeline", "plugins", "upstreams", "routes"]
    problems += [unknown_key("$", key, top_level) for key in raw if key not in top_level]

    server, found = structure(raw.get("server", {}), ServerConfig, "$.server")
    problems += found
    upstreams: dict[str, UpstreamConfig] = {}
    for name, table in _tables(raw, "upstreams", problems).items():
        upstream, found = structure_partly(table, UpstreamConfig, f"$.upstreams.{name}")
        problems += found
        if upstream is not None:
            upstreams[name] = attrs.evolve(upstream, name=name)
    # Routes with problems stay in the partial config, so that their plugins are checked too.
    routes: dict[str, RouteConfig] = {}
    route_tables = _tables(raw, "routes", problems)
    if not route_tables:
        # An empty or half-written file must not replace a config that serves.
        problems.append("$.routes: the config defines no routes, so every request would answer 404")
    for name, table in route_tables.items():
        route, found = structure_partly(table, RouteConfig, f"$.routes.{name}")
        problems += found
        if route is not None:
            problems += _check_route(name, route, raw.get("upstreams", {}))
            routes[name] = route
    pipeline, found = _names(raw.get("pipeline", []), "$.pipeline")
    problems += found
    plugins = _tables(raw, "plugins", problems)
    config = GatewayConfig(
        server=server or ServerConfig(),
        pipeline=pipeline,
        plugins=plugins,
        upstreams=upstreams,
        routes=routes,
        source=source,
    )
    return config, drop_consequences(problems)


def _tables(raw: dict[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"$.{key}: not a table ({type(value).__name__})")
        return {}
    return value


def _names(value: Any, path: str) -> tuple[tuple[str, ...], list[str]]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return (), [f"{path}: not a list of plugin names ({value!r})"]
    return tuple(value), []


def _check_route(name: str, route: RouteConfig, upstreams: Any) -> list[str]:
    path = f"$.routes.{name}"
    problems = []
    try:
        pattern = PathPattern(route.path)
    except ValueError as exc:
        return [f"{path}.path: {exc}"]
    if route.upstream is not None and route.upstream not in upstreams:
        known = ", ".join(sorted(upstreams)) or "none"
        problems.append(f"{path}.upstream: unknown upstream {route.upstream!r} (known: {known})")
    if route.upstream_path is not None:
        missing = PathPattern.template_names(route.upstream_path) - pattern.names
        if missing:
            problems.append(
                f"{path}.upstream_path: parameter(s) {', '.join(sorted(missing))} "
                f"are not in the path {route.path!r}"
            )
    return problems


def default_config_text() -> str:
    """The config shipped inside the package."""
    return resources.files("gateway").joinpath("config.toml").read_text()


def find_config(path: str | None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Resolve which config to read: ``-c``, ``$GATEWAY_CONFIG``, ``./config.toml``, default.

    Returns ``(source name, text)``.
    """
    env = os.environ if env is None else env
    chosen = path or env.get("GATEWAY_CONFIG")
    if chosen is None and Path("config.toml").is_file():
        chosen = "config.toml"
    if chosen is None:
        return "<default config.toml>", default_config_text()
    try:
        return chosen, Path(chosen).read_text()
    except OSError as exc:
        raise ConfigError(chosen, [f"cannot read the file: {exc.strerror}"]) from None
