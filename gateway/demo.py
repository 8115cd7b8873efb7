"""``gateway demo``: the simulator and the gateway in front of it, with curl commands.

A newcomer sees a streamed answer within a minute, with no account: the
gateway runs the shipped default config, pointed at the built-in simulator.
"""

from __future__ import annotations

import asyncio
import os
import signal

from gateway.config import default_config_text
from gateway.logs import configure_logging
from gateway.runtime import load_runtime
from gateway.server import Service, make_socket
from gateway.testing import DEMO_ACCOUNT, start_simulator

DEMO_TOKEN = "demo-token"  # noqa: S105 - the simulator accepts any token


def demo_commands(base: str) -> str:
    """The curl commands printed for the demo."""
    conversation = (
        '{"action": "next", "messages": [{"id": "m1", "author": {"role": "user"}, '
        '"content": {"content_type": "text", "parts": ["Hello World"]}}], '
        '"parent_message_id": "p1", "model": "text-davinci-002-render-sha"}'
    )
    chat = (
        '{"model": "gpt-3.5-turbo", "stream": true, '
        '"messages": [{"role": "user", "content": "Hello World"}]}'
    )
    return f"""
The gateway is serving on {base}, in front of a simulated ChatGPT and OpenAI.
Try (any token works with the simulator):

  # a streamed ChatGPT conversation, event by event
  curl -N {base}/conversation -H 'Authorization: {DEMO_TOKEN}' \\
       -H 'Content-Type: application/json' -d '{conversation}'

  # the conversation list (limit defaults to 20, capped at 100)
  curl '{base}/conversations?limit=500' -H 'Authorization: {DEMO_TOKEN}'

  # an OpenAI chat completion, streamed
  curl -N {base}/v1/chat/completions -H 'Authorization: Bearer sk-demo' \\
       -H 'Content-Type: application/json' -d '{chat}'

  # log in with the simulator's demo account
  curl {base}/auth/login -H 'Content-Type: application/json' \
       -d '{{"username": "{DEMO_ACCOUNT.email}", "password": "{DEMO_ACCOUNT.password}"}}'

  curl {base}/healthz
  curl {base}/metrics

Press Ctrl-C to stop.
"""


async def run_demo(port: int, host: str = "127.0.0.1") -> int:
    """Serve the demo until interrupted; return the exit status."""
    configure_logging("info", "console")
    simulator = await start_simulator(delay=0.15)
    env = {
        **os.environ,
        "CHATGPT_BASE_URL": simulator.chatgpt_url,
        "CHATGPT_WEB_URL": simulator.web_url,
        "CHATGPT_AUTH0_URL": simulator.auth0_url,
        "OPENAI_BASE_URL": simulator.openai_url,
        "GO_CHATGPT_API_PROXY": "",
        "PROXY": "",
        "GATEWAY_PROXY": "",
    }
    runtime = load_runtime(default_config_text(), "<default config.toml>", env)
    service = await Service.create(runtime)
    await service.start(make_socket(host, port))
    print(demo_commands(f"http://{host}:{service.port}"), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await service.stop(drain_timeout=2)
        await simulator.close()
    return 0
