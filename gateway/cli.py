"""The ``gateway`` command: ``run``, ``check``, ``plugins``, ``keygen``, ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import attrs

from gateway.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"{exc.source}: config is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve")
    run.add_argument(
        "-c", "--config", help="config file (default: $GATEWAY_CONFIG, ./config.toml, built-in)"
    )
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    run.add_argument("--watch", action="store_true", help="reload when the config file changes")
    run.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    check = commands.add_parser("check", help="validate a config and show each route's pipeline")
    check.add_argument("-c", "--config")
    check.set_defaults(func=cmd_check)

    plugins = commands.add_parser("plugins", help="list installed plugins and their options")
    plugins.set_defaults(func=cmd_plugins)

    keygen = commands.add_parser("keygen", help="make a client key for auth's keys mode")
    keygen.add_argument("--name", default="client", help="who the key is for")
    keygen.set_defaults(func=cmd_keygen)

    demo = commands.add_parser("demo", help="run the gateway in front of a built-in simulator")
    demo.add_argument("--port", type=int, default=8080)
    demo.set_defaults(func=cmd_demo)
    return parser


def run_async(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (the ``speed`` extra), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return int(uvloop.run(coroutine))


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.running import load, serve_until_stopped

    if args.workers > 1:
        import structlog

        from gateway.logs import configure_logging
        from gateway.workers import per_process_warnings, run_workers

        runtime = load(args.config)  # refuse to start workers on a bad config
        configure_logging(runtime.config.server.log_level, runtime.config.server.log_format)
        for warning in per_process_warnings(runtime.plugins):
            structlog.get_logger("gateway").warning(warning, workers=args.workers)
        forwarded = [
            f"--{k}={v}"
            for k, v in (("config", args.config), ("host", args.host), ("port", args.port))
            if v is not None
        ]
        if args.watch:
            forwarded.append("--watch")
        return run_workers(args.workers, forwarded)
    sock = None
    if args.reuse_port:
        from gateway.server import make_socket

        config = load(args.config).config
        port = args.port if args.port is not None else config.server.port
        sock = make_socket(args.host or config.server.host, port, reuse_port=True)
    return run_async(
        serve_until_stopped(args.config, args.host, args.port, watch=args.watch, sock=sock)
    )


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.running import load

    runtime = load(args.config)
    config = runtime.config
    print(f"{config.source}: OK, {len(config.routes)} routes")
    for name, route in config.routes.items():
        methods = ",".join(route.methods)
        target = "(answered by a plugin)"
        if route.upstream is not None:
            upstream = config.upstreams[route.upstream]
            target = (
                f"-> {upstream.name} {upstream.url.rstrip('/')}{route.upstream_path or route.path}"
            )
        pipeline = " > ".join(p.name for p in runtime.pipelines[name].plugins) or "(no plugins)"
        print(f"  {name}: {methods} {route.path} {target}\n      pipeline: {pipeline}")
    from gateway.workers import per_process_warnings

    for warning in per_process_warnings(runtime.plugins):
        print(f"warning: {warning}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from gateway.registry import (
        PluginLoadError,
        distribution_name,
        installed_plugins,
        load_plugin_class,
    )

    installed = installed_plugins()
    for name in sorted(installed):
        entry_point = installed[name]
        print(f"{name}  ({distribution_name(entry_point)}; {entry_point.value})")
        try:
            cls = load_plugin_class(name, installed)
        except PluginLoadError as exc:
            print(f"    cannot load: {exc}")
            continue
        print(f"    {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}")
        for field in attrs.fields(cls.Config):
            print(f"    {field.name}: {describe_default(field)}")
    return 0


def describe_default(field: attrs.Attribute) -> str:  # type: ignore[type-arg]
    """A config field's default, as ``gateway plugins`` shows it."""
    default: Any = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return f"default {default.factory()!r}"
    if default is attrs.NOTHING:
        return "required"
    return f"default {field.default!r}"


def cmd_keygen(args: argparse.Namespace) -> int:
    from gateway.keys import new_key

    key, digest = new_key()
    print(f"Client key for {args.name} (shown once, store it now):\n\n    {key}\n")
    print("Paste into config.toml, under [plugins.auth]:\n")
    print(f'    keys.{args.name} = {{ sha256 = "{digest}" }}')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_async(run_demo(args.port))
