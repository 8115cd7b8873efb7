"""``gateway demo`` and ``gateway simulate``: the built-in simulator, with a gateway or alone.

- ``gateway demo`` runs the simulated ChatGPT, login and OpenAI upstreams and a
  gateway in front of them on 127.0.0.1, and prints curl commands that work with
  no account: a newcomer sees a streamed answer within a minute.  The gateway
  runs the shipped default config, or ``-c FILE``; either reads the upstreams'
  addresses from the variables the simulator sets (`Simulator.environment`).
- ``gateway simulate`` runs only the simulated upstreams and prints those
  variables, to export before ``gateway run`` in another shell.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal

from gateway.config import default_config_text, find_config
from gateway.logs import configure_logging
from gateway.runtime import Runtime, load_runtime
from gateway.server import Service, make_socket
from gateway.testing import DEMO_ACCOUNT, Simulator, start_simulator

DEMO_TOKEN = "demo-token"  # noqa: S105 - the simulator accepts any token
#: Seconds between simulated stream events: slow enough to watch an answer arrive.
EVENT_DELAY = 0.15


def demo_commands(base: str) -> str:
    """The curl commands printed for the demo of the default config."""
    conversation = (
        '{"action": "next", "messages": [{"id": "m1", "author": {"role": "user"}, '
        '"content": {"content_type": "text", "parts": ["Hello World"]}}], '
        '"parent_message_id": "p1", "model": "text-davinci-002-render-sha"}'
    )
    chat = (
        '{"model": "gpt-3.5-turbo", "stream": true, '
        '"messages": [{"role": "user", "content": "Hello World"}]}'
    )
    login = f'{{"username": "{DEMO_ACCOUNT.email}", "password": "{DEMO_ACCOUNT.password}"}}'
    json_body = "-H 'Content-Type: application/json'"
    return f"""
The gateway is serving on {base}, in front of a simulated ChatGPT and OpenAI.
Try (any token works with the simulator):

  # a streamed ChatGPT conversation, event by event
  curl -N {base}/conversation -H 'Authorization: {DEMO_TOKEN}' \\
       {json_body} -d '{conversation}'

  # the conversation list (limit defaults to 20, capped at 100)
  curl '{base}/conversations?limit=500' -H 'Authorization: {DEMO_TOKEN}'

  # the OpenAI chat API over the ChatGPT account, streamed
  curl -N {base}/imitate/v1/chat/completions -H 'Authorization: Bearer {DEMO_TOKEN}' \\
       {json_body} -d '{chat}'

  # an OpenAI chat completion, streamed
  curl -N {base}/v1/chat/completions -H 'Authorization: Bearer sk-demo' \\
       {json_body} -d '{chat}'

  # log in with the simulator's demo account
  curl {base}/auth/login {json_body} \\
       -d '{login}'

  curl {base}/healthz
  curl {base}/metrics

Press Ctrl-C to stop.
"""


def exports(simulator: Simulator) -> str:
    """The ``export`` lines that point a config's upstreams at ``simulator``."""
    return "\n".join(
        f"  export {name}={shlex.quote(value)}" for name, value in simulator.environment().items()
    )


def config_summary(runtime: Runtime, base: str, simulator: Simulator) -> str:
    """What the demo prints for a config of the operator's own."""
    routes = "\n".join(
        f"  {name}: {','.join(route.methods)} {route.path}"
        for name, route in runtime.config.routes.items()
    )
    return f"""
The gateway is serving {runtime.config.source} on {base}, in front of a simulated ChatGPT
and OpenAI. The config read these variables, which point at the simulator (a config
that names its upstreams' URLs itself still calls those):

{exports(simulator)}

Its routes:
{routes}

Press Ctrl-C to stop.
"""


async def until_signalled() -> None:
    """Wait for SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def run_demo(port: int, host: str = "127.0.0.1", config_path: str | None = None) -> int:
    """Serve the demo (the default config, or ``config_path``) until interrupted."""
    configure_logging("info", "console")
    simulator = await start_simulator(delay=EVENT_DELAY)
    try:
        if config_path is None:
            source, text = "<default config.toml>", default_config_text()
        else:
            source, text = find_config(config_path)
        runtime = load_runtime(text, source, {**os.environ, **simulator.environment()})
        service = await Service.create(runtime)
        await service.start(make_socket(host, port))
    except BaseException:
        await simulator.close()
        raise
    base = f"http://{host}:{service.port}"
    text = demo_commands(base) if config_path is None else config_summary(runtime, base, simulator)
    print(text, flush=True)
    try:
        await until_signalled()
    finally:
        await service.stop(drain_timeout=2)
        await simulator.close()
    return 0


async def run_simulator(host: str = "127.0.0.1", port: int = 0) -> int:
    """Serve the simulated upstreams alone until interrupted."""
    simulator = await start_simulator(host, port, delay=EVENT_DELAY)
    print(
        f"""
The simulated upstreams are serving: ChatGPT and OpenAI on {simulator.url}, the
login's Auth0 host on {simulator.auth0_url}. Any token works; the login knows
{DEMO_ACCOUNT.email} / {DEMO_ACCOUNT.password}. These variables point the default
config (or any config that reads them) at the simulator:

{exports(simulator)}

Export them, then run `gateway run` in that shell; or run `gateway demo -c FILE`,
which does both at once.
Press Ctrl-C to stop.
""",
        flush=True,
    )
    try:
        await until_signalled()
    finally:
        await simulator.close()
    return 0
