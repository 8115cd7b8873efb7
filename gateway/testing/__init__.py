"""Simulated upstreams: a ChatGPT web backend and an OpenAI API, as real aiohttp apps.

The gateway's tests, its ``gateway demo`` command and its benchmarks run against
these instead of the real services. This package needs only aiohttp, attrs and
multidict: importing it does not import the rest of the gateway.

- `chatgpt_app`: ChatGPT's ``/backend-api`` routes, the conversation stream included.
- `openai_app`: OpenAI's ``/v1`` routes (models, chat completions, embeddings).
- `start_simulator`: both on one port, returning a `Simulator` with the base URLs.
- `LoginSimulator`, `Account`, `Fault`: the ChatGPT login (web host ``/api/auth/*`` on
  the same port, its Auth0 host on a second one), configured through ``Simulator.login``
  (demo account ``demo@example.com`` / ``demo-password``; see `gateway.testing.login`).
- `Recorder` / `RecordedRequest`: what the upstream received, for assertions.

Test hooks: ``X-Sim-Status: NNN`` on any request; ``X-Sim-Fail: error-event |
max-tokens | die | rewrite`` on ``POST /backend-api/conversation``, which also
continues its own answers (``action: "continue"``).
"""

from gateway.testing.chatgpt import chatgpt_app
from gateway.testing.login import LoginSimulator
from gateway.testing.login_pages import DEMO_ACCOUNT, Account, Fault
from gateway.testing.openai import openai_app
from gateway.testing.recorder import RecordedRequest, Recorder
from gateway.testing.server import Simulator, start_simulator

__all__ = [
    "DEMO_ACCOUNT",
    "Account",
    "Fault",
    "LoginSimulator",
    "RecordedRequest",
    "Recorder",
    "Simulator",
    "chatgpt_app",
    "openai_app",
    "start_simulator",
]
