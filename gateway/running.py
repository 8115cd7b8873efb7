"""Running one gateway process: signals, hot reload and graceful drain.

- ``SIGTERM`` / ``SIGINT``: stop accepting, let open requests finish up to
  ``server.drain_timeout``, close the rest, exit 0.
- ``SIGHUP`` (and, with ``--watch``, a change of the config file): reload.  An
  invalid new config is logged with every problem and the old one keeps serving.
  ``[server]`` settings that only a restart can apply (the listening address,
  connection handling, logging) are named in a warning and keep their old values.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path

import attrs
import structlog

from gateway.config import ServerConfig, find_config
from gateway.errors import ConfigError
from gateway.logs import configure_logging, flush_logs
from gateway.runtime import Runtime, load_runtime
from gateway.server import Service, make_socket

logger = structlog.get_logger("gateway")

WATCH_INTERVAL = 1.0
WATCH_SETTLE = 0.5
#: The ``[server]`` settings a reload applies at once; every other one (the socket, how
#: connections are handled, logging) keeps its old value until a restart.
APPLIED_ON_RELOAD = frozenset({"trusted_hops", "max_body_size", "drain_timeout"})


def load(config_path: str | None) -> Runtime:
    """Read, interpolate and check the config the command line points to, plugins included."""
    source, text = find_config(config_path)
    return load_runtime(text, source)


async def serve_until_stopped(
    config_path: str | None,
    host: str | None,
    port: int | None,
    *,
    watch: bool = False,
    sock: socket.socket | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    runtime = load(config_path)
    server = runtime.config.server
    configure_logging(server.log_level, server.log_format)
    warn_about_unsupported_settings(os.environ)
    service = await Service.create(runtime)
    if sock is None:
        sock = make_socket(host or server.host, port if port is not None else server.port)
    await service.start(sock)
    logger.info("gateway started", host=sock.getsockname()[0], port=service.port, pid=os.getpid())

    stop = asyncio.Event()
    reloads: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, "SIGHUP")
    overridden = [name for name, value in (("host", host), ("port", port)) if value is not None]
    tasks = [asyncio.create_task(_reload_loop(service, config_path, reloads, overridden))]
    if watch:
        tasks.append(asyncio.create_task(_watch(config_path, reloads)))
    await stop.wait()
    logger.info("draining", in_flight=service.runtime.in_flight)
    for task in tasks:
        task.cancel()
    drained = await service.stop()
    logger.info("gateway stopped", drained=drained)
    flush_logs()
    return 0


def warn_about_unsupported_settings(env: Mapping[str, str]) -> None:
    """Answer go-chatgpt-api's variables for what the gateway does not do with a warning."""
    if env.get("ARKOSE_TOKEN_URL"):
        logger.warning(
            "ARKOSE_TOKEN_URL is set, but captcha solving is not supported: the gateway "
            "never calls it; ChatGPT's anti-abuse headers (openai-sentinel-*) pass through "
            "from the client, and the gateway does not compute them"
        )


async def _reload_loop(
    service: Service,
    config_path: str | None,
    reloads: asyncio.Queue[str],
    overridden: Collection[str],
) -> None:
    in_force = service.runtime.config.server
    while True:
        reason = await reloads.get()
        try:
            runtime = load(config_path)
            await service.reload(runtime)
        except ConfigError as exc:
            logger.error(
                "reload refused, keeping the old config",
                reason=reason,
                problems=[f"{exc.source}: {p}" for p in exc.problems],
            )
        except Exception as exc:
            logger.exception(
                "reload failed, keeping the old config", reason=reason, error=repr(exc)
            )
        else:
            logger.info("config reloaded", reason=reason, source=runtime.config.source)
            unapplied = settings_needing_restart(in_force, runtime.config.server, overridden)
            if unapplied:
                logger.warning(
                    "these settings changed but need a restart; their old values stay in force",
                    settings=unapplied,
                )


def settings_needing_restart(
    in_force: ServerConfig, new: ServerConfig, overridden: Collection[str]
) -> list[str]:
    """The ``[server]`` settings of ``new`` that differ from those in force and a reload
    cannot apply; settings the command line gave (``overridden``) never change."""
    return [
        f"server.{field.name}"
        for field in attrs.fields(ServerConfig)
        if field.name not in APPLIED_ON_RELOAD
        and field.name not in overridden
        and getattr(in_force, field.name) != getattr(new, field.name)
    ]


async def _watch(config_path: str | None, reloads: asyncio.Queue[str]) -> None:
    """Poll the config file; reload once a change has settled and the file parses.

    Polling needs no extra dependency and works in containers.  A file written
    in place passes through half-written states: a change is loaded only once
    the file has stayed the same for `WATCH_SETTLE` seconds and is valid TOML
    (writing a new file and renaming it over the old, as the README recommends,
    never shows a half-written one).
    """
    source, _ = find_config(config_path)
    path = Path(source)
    seen = _stamp(path)
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        stamp = _stamp(path)
        if stamp == seen:
            continue
        while True:  # still being written: wait until it stops changing
            await asyncio.sleep(WATCH_SETTLE)
            settled, stamp = stamp, _stamp(path)
            if settled == stamp:
                break
        seen = stamp
        problem = _toml_problem(path)
        if problem is not None:
            logger.warning(
                "config file does not parse, not reloaded; waiting for the next change",
                source=source,
                error=problem,
            )
            continue
        reloads.put_nowait("file changed")


def _toml_problem(path: Path) -> str | None:
    """Why the file is not (yet) valid TOML, or ``None`` when it is."""
    try:
        tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return str(exc)
    return None


def _stamp(path: Path) -> tuple[float, int] | None:
    with contextlib.suppress(OSError):
        stat = path.stat()
        return stat.st_mtime, stat.st_size
    return None
