"""The ``gateway`` command: ``run``, ``check``, ``plugins``, ``keygen``, ``usage``, ``demo``,
``simulate``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from importlib import metadata
from typing import Any, Protocol, cast

from gateway import __version__
from gateway.errors import ConfigError

DESCRIPTION = """\
A self-hosted gateway for the ChatGPT web backend and the OpenAI API.

Without -c, run and check read $GATEWAY_CONFIG, else ./config.toml, else the
built-in default config.
"""
CONFIG_HELP = "config file (default: $GATEWAY_CONFIG, else ./config.toml, else the built-in one)"


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
    except BrokenPipeError:  # `gateway plugins | head`: the reader left, as it may
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def version() -> str:
    try:
        return metadata.version("chatgpt-gateway")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gateway {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve", description="Serve until SIGTERM.")
    run.add_argument("-c", "--config", help=CONFIG_HELP)
    run.add_argument("--host", help="listen address (default: the config's server.host)")
    run.add_argument("--port", type=int, help="listen port (default: the config's server.port)")
    run.add_argument("--workers", type=int, default=1, help="processes sharing the port (1)")
    run.add_argument("--watch", action="store_true", help="reload when the config file changes")
    run.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    check = commands.add_parser(
        "check",
        help="validate a config and show each route's pipeline",
        description="Validate a config; list every problem, or each route and its pipeline.",
    )
    check.add_argument("-c", "--config", help=CONFIG_HELP)
    check.set_defaults(func=cmd_check)

    plugins = commands.add_parser(
        "plugins",
        help="list installed plugins and their options",
        description="List every installed plugin, its options and their defaults.",
    )
    plugins.set_defaults(func=cmd_plugins)

    keygen = commands.add_parser(
        "keygen",
        help="make a client key for auth's keys mode",
        description="Make a client key; the config stores only its SHA-256.",
    )
    keygen.add_argument("--name", default="client", help="who the key is for (client)")
    keygen.add_argument(
        "--json", action="store_true", help="print name, key, sha256 and config line as JSON"
    )
    keygen.set_defaults(func=cmd_keygen)

    usage = commands.add_parser(
        "usage",
        help="totals from the usage ledger by key, team, model, route or day",
        description=(
            "Print totals from the usage ledger that [plugins.usage] writes: requests, errors, "
            "tokens, mean duration and bytes, by key, team, model, route or day (UTC). "
            "Times: 2026-11-01, 2026-11-01T12:00 (UTC unless an offset is given), today, 7d, 12h."
        ),
    )
    usage.add_argument("-c", "--config", help=CONFIG_HELP)
    usage.add_argument(
        "--store", help="the ledger: a SQLite file or a postgresql:// URL (default: the config's)"
    )
    usage.add_argument("--since", help="from this time on (default: the start of this month)")
    usage.add_argument("--until", help="before this time (default: now)")
    usage.add_argument(
        "--by",
        default="key",
        choices=("key", "team", "model", "route", "day", "credential", "upstream"),
        help="what to total by (key)",
    )
    usage.add_argument(
        "--format", default="table", choices=("table", "csv", "json"), help="output (table)"
    )
    usage.set_defaults(func=cmd_usage)

    demo = commands.add_parser(
        "demo",
        help="run the gateway in front of the built-in simulator",
        description="Run the simulated upstreams and a gateway in front of them, on 127.0.0.1.",
    )
    demo.add_argument("--port", type=int, default=8080, help="the gateway's port (8080)")
    demo.add_argument(
        "-c", "--config", help="run this config against the simulator (default: the built-in one)"
    )
    demo.set_defaults(func=cmd_demo)

    simulate = commands.add_parser(
        "simulate",
        help="run only the simulated upstreams, and print the variables to export",
        description="Run the simulated ChatGPT, login and OpenAI upstreams on their own.",
    )
    simulate.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    simulate.add_argument("--port", type=int, default=0, help="listen port (0: any free one)")
    simulate.set_defaults(func=cmd_simulate)
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
    count = len(config.routes)
    print(f"{config.source}: OK, {count} route{'' if count == 1 else 's'}")
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
    from gateway.plugin_listing import plugin_listing
    from gateway.registry import installed_plugins

    print(plugin_listing(installed_plugins()))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from gateway.keys import new_key

    key, digest = new_key()
    line = f'keys.{args.name} = {{ sha256 = "{digest}" }}'
    if args.json:
        print(json.dumps({"name": args.name, "key": key, "sha256": digest, "config": line}))
        return 0
    print(f"Client key for {args.name} (shown once, store it now):\n\n    {key}\n")
    print("Paste into config.toml, under [plugins.auth]:\n")
    print(f"    {line}")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    # The report is the installed `usage` plugin's (gateway_plugins.usage, or a
    # replacement registered under that name): the engine does not import plugins, and
    # the ledger's modules (and a database driver) load only for this command.
    from gateway.registry import PluginLoadError, load_plugin_class

    try:
        ledger = cast("UsageReporter", load_plugin_class("usage"))
    except PluginLoadError as exc:
        print(f"gateway usage: {exc}", file=sys.stderr)
        return 1
    location = args.store
    if location is None:
        from gateway.running import load

        runtime = load(args.config)
        configured = [p for p in runtime.plugins if p.name == "usage"]
        location = configured[0].config.store if configured else ledger.Config().store
    status, text = asyncio.run(
        ledger.usage_report(
            location, by=args.by, since=args.since, until=args.until, output=args.format
        )
    )
    print(text, file=sys.stdout if status == 0 else sys.stderr)
    return status


class UsageReporter(Protocol):
    """What `gateway usage` needs of the ``usage`` plugin class."""

    Config: type[Any]

    @staticmethod
    def usage_report(
        location: str, *, by: str, since: str | None, until: str | None, output: str
    ) -> Coroutine[Any, Any, tuple[int, str]]: ...


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_async(run_demo(args.port, config_path=args.config))


def cmd_simulate(args: argparse.Namespace) -> int:
    from gateway.demo import run_simulator

    return run_async(run_simulator(args.host, args.port))
