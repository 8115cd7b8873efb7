"""The config: frozen attrs classes structured from TOML by cattrs.

Unknown keys are errors (typos must not pass silently), every string may use
``${VAR}`` interpolation, durations and sizes read as people write them, and
every problem is reported at once with its key path::

    config.toml: $.upstreams.chatgpt.url: not a URL ("htp:/x")
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, NewType, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import ClassValidationError, IterableValidationError
from yarl import URL

from gateway.config_problems import (
    describe_errors,
    drop_consequences,
    faulty_keys,
    join_path,
    unknown_key,
)
from gateway.errors import ConfigError
from gateway.interpolate import interpolate_tree

# (Also imported from here by plugins, until they import the plugin API.)
from gateway.redaction import redact_url as redact_url
from gateway.units import parse_duration, parse_size

Seconds = NewType("Seconds", float)
Bytes = NewType("Bytes", int)
HttpUrl = NewType("HttpUrl", str)
ProxyUrl = NewType("ProxyUrl", str)
Methods = NewType("Methods", tuple[str, ...])


@attrs.frozen
class Range:
    """The values a numeric setting may take, declared on its type and checked on load.

    ::

        port: Annotated[int, Range(1, 65535)] = 8080
        idle_timeout: Annotated[Seconds, Range(0, above=True)] = Seconds(300.0)

    The converter checks the value once it is structured, so a problem names its
    key path like any other: ``$.server.port: must be between 1 and 65535 (0)``.
    """

    min: float | None = None
    max: float | None = None
    #: ``min`` itself is excluded (a timeout of zero makes no sense).
    above: bool = False

    def check(self, value: float) -> None:
        """Raise `ValueError` when ``value`` is outside the range."""
        low, high = self.min, self.max
        if self.above and low is not None and value <= low:
            raise ValueError(f"must be above {low!r} ({value!r})")
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                raise ValueError(f"must be between {low!r} and {high!r} ({value!r})")
            if low is not None:
                raise ValueError(f"must be at least {low!r} ({value!r})")
            raise ValueError(f"must be at most {high!r} ({value!r})")


#: Common ranges: whole numbers from zero or one, durations above zero.
NonNegativeInt = Annotated[int, Range(0)]
PositiveInt = Annotated[int, Range(1)]
PositiveSeconds = Annotated[Seconds, Range(0, above=True)]


def range_of(type_: Any) -> Range | None:
    """The `Range` an ``Annotated`` type declares, if any."""
    if get_origin(type_) is Annotated:
        for extra in type_.__metadata__:
            if isinstance(extra, Range):
                return extra
    return None


PROXY_SCHEMES = frozenset({"http", "https", "socks4", "socks5", "socks5h"})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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


def _structure_url(value: object, _: object) -> HttpUrl:
    url = _parse_url(value, {"http", "https"})
    return HttpUrl(str(url))


def _structure_proxy(value: object, _: object) -> ProxyUrl:
    _parse_url(value, PROXY_SCHEMES)
    return ProxyUrl(str(value))


def _parse_url(value: object, schemes: set[str] | frozenset[str]) -> URL:
    try:
        url = URL(str(value))
    except ValueError:
        url = None
    if not isinstance(value, str) or url is None or url.scheme not in schemes or not url.host:
        raise ValueError(f'not a URL ("{redact_url(str(value))}")')
    return url


def _structure_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "0", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean ({value!r})")


def _structure_methods(value: object, _: object) -> Methods:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(m, str) for m in items):
        raise ValueError(f"not a list of HTTP methods ({value!r})")
    methods = tuple(m.upper() for m in items)
    unknown = [m for m in methods if m != "*" and m not in HTTP_METHODS]
    if unknown:
        raise ValueError(f"unknown HTTP method {unknown[0]!r}")
    return Methods(methods)


def _structure_proxies(value: object, _: object) -> tuple[ProxyUrl, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"not a proxy URL or list of them ({type(value).__name__})")
    # An empty string (``${GO_CHATGPT_API_PROXY:-}`` unset) means no proxy.
    return tuple(_structure_proxy(item, None) for item in items if item != "")


def make_converter() -> cattrs.Converter:
    """The cattrs converter for config classes: strict keys, readable units."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(Seconds, lambda v, _: Seconds(parse_duration(v)))
    converter.register_structure_hook(Bytes, lambda v, _: Bytes(parse_size(v)))
    converter.register_structure_hook(HttpUrl, _structure_url)
    converter.register_structure_hook(ProxyUrl, _structure_proxy)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(Methods, _structure_methods)
    # Generic aliases cannot be registered by type; match them by equality instead.
    generic_hooks: dict[Any, Callable[[object, object], Any]] = {
        tuple[ProxyUrl, ...]: _structure_proxies,
        Mapping[str, Any]: _structure_table,
        Mapping[str, Mapping[str, Any]]: _structure_tables,
        Mapping[str, str]: _structure_strings,
    }
    converter.register_structure_hook_func(
        lambda t: t in generic_hooks, lambda v, t: generic_hooks[t](v, t)
    )

    def structure_int(value: object, _: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"not a whole number ({value!r})")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"not a whole number ({value!r})") from None

    converter.register_structure_hook(int, structure_int)

    def structure_str(value: object, _: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"not a string ({value!r})")
        return value

    converter.register_structure_hook(str, structure_str)

    def structure_in_range(type_: Any) -> Callable[[object, object], Any]:
        bounds = range_of(type_)
        assert bounds is not None
        base = get_args(type_)[0]
        structure_base = converter.get_structure_hook(base)

        def structure(value: object, _: object) -> Any:
            number = structure_base(value, base)
            bounds.check(number)
            return number

        return structure

    converter.register_structure_hook_factory(lambda t: range_of(t) is not None, structure_in_range)
    return converter


def _structure_table(value: object, _: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"not a table ({type(value).__name__})")
    return value


def _structure_tables(value: object, _: object) -> Mapping[str, Mapping[str, Any]]:
    table = _structure_table(value, None)
    for key, item in table.items():
        if not isinstance(item, dict):
            raise ValueError(f"{key}: not a table ({type(item).__name__})")
    return table


def _structure_strings(value: object, _: object) -> Mapping[str, str]:
    table = _structure_table(value, None)
    for key, item in table.items():
        if not isinstance(item, str):
            raise ValueError(f"{key}: not a string ({item!r})")
    return dict(table)


CONVERTER = make_converter()


def structure(data: Any, cls: type[Any], path: str) -> tuple[Any, list[str]]:
    """Structure ``data`` into ``cls``; return the result (or ``None``) and the problems."""
    if not isinstance(data, dict):
        return None, [f"{path}: not a table ({type(data).__name__})"]
    try:
        return CONVERTER.structure(data, cls), []
    except (ClassValidationError, IterableValidationError) as exc:
        return None, describe_errors(exc, path)
    except (ValueError, TypeError) as exc:
        return None, [join_path(path, str(exc))]


def structure_partly(data: Any, cls: type[Any], path: str) -> tuple[Any, list[str]]:
    """`structure`, but when keys are at fault, the rest structured without them.

    The result stands in for the table in the checks that need it (a route's
    upstream, its plugins), so that every problem of the table is reported at once.
    """
    if not isinstance(data, dict):
        return structure(data, cls, path)
    try:
        return CONVERTER.structure(data, cls), []
    except ClassValidationError as exc:
        rest = {key: value for key, value in data.items() if key not in faulty_keys(exc)}
        return structure(rest, cls, path)[0], describe_errors(exc, path)
    except (IterableValidationError, ValueError, TypeError):
        return structure(data, cls, path)


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
    from gateway.routing import PathPattern

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
