"""What is measured: the targets, the requests each is asked, and how each is started.

Every target answers the same two requests, whose answers come from the same
bench upstream: a small JSON chat completion (``POST /v1/chat/completions``)
and a stream of server-sent events (the same with ``"stream": true``).  A
yardstick row is a bare aiohttp pass-through proxy (``bench.minimal_proxy``),
the kind the issue's reference figures came from.  One extra row asks the
default gateway go-chatgpt-api's own routes, whose pipeline adds ``rewrite``:
``GET /conversations`` (query defaults and bounds) and ``POST /conversation``
(the body normalised).  The upstream answers every path
alike, so all rows share the same upstream cost and compare with ``direct``.
Last, measured for throughput only, all running at once and in turns: each
built-in plugin alone on the bare config, the bare config again (their
baseline), and the default pipeline with and without ``access_log``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from bench import gateway_configs, litellm, nginx
from bench.load import Request
from bench.procs import LOAD_CPU, PROXY_CPU, Procs, free_port, wait_http, wait_tcp

ROOT = Path(__file__).resolve().parents[1]
JSON_HEADERS = (("Content-Type", "application/json"),)
CHAT: dict[str, Any] = {
    "model": "gpt-3.5-turbo",
    "messages": [{"role": "user", "content": "Say hello."}],
}
CONVERSATION: dict[str, Any] = {
    "action": "next",
    "messages": [
        {
            "id": "5f0b7e7c-0a4e-4a8e-9d5e-1b2c3d4e5f60",
            "author": {"role": "user"},
            "content": {"content_type": "text", "parts": ["Say hello."]},
        }
    ],
    "conversation_id": "",
    "parent_message_id": "0d6a4d2c-3b1e-4f5a-8c7d-9e0f1a2b3c4d",
    "model": "text-davinci-002-render-sha",
}


def _body(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def openai_requests(token: str) -> tuple[Request, Request]:
    """The JSON and the streaming chat completion, with ``token`` as the bearer."""
    headers = (*JSON_HEADERS, ("Authorization", f"Bearer {token}"))
    return (
        Request("POST", "/v1/chat/completions", _body(CHAT), headers),
        Request("POST", "/v1/chat/completions", _body({**CHAT, "stream": True}), headers),
    )


def chatgpt_requests(token: str) -> tuple[Request, Request]:
    """go-chatgpt-api's routes: the conversation list, and a new conversation (streamed)."""
    auth = (("Authorization", f"Bearer {token}"),)
    return (
        Request("GET", "/conversations?offset=0", b"", auth),
        Request("POST", "/conversation", _body(CONVERSATION), (*JSON_HEADERS, *auth)),
    )


@attrs.frozen
class Target:
    """One row of the table."""

    key: str  # short name, used in results and --only
    title: str  # the row's label
    kind: str  # direct | nginx | minimal | gateway | litellm
    json_request: Request
    sse_request: Request
    variant: str = ""  # the gateway config variant
    #: Whether the memory probe runs (it restarts the process once per stream count).
    memory: bool = True
    #: Stream counts of the memory probe; empty: the run's own.
    memory_counts: tuple[int, ...] = ()
    #: Only requests per second and CPU per request, in turns with the other such
    #: targets (a plugin measured alone).
    throughput_only: bool = False
    #: Gateway worker processes (``--workers``); more than one runs unpinned, on every CPU.
    workers: int = 1
    #: Seconds allowed to open the memory probe's streams; ``None``: the run's own.
    open_timeout: float | None = None
    #: Probe memory in the process just measured, not a fresh one (slow to start).
    reuse_for_memory: bool = False
    #: Streams of the SSE measurement; ``None``: the run's own (a slow target gets fewer).
    sse_streams: int | None = None
    startup_timeout: float = 30.0


#: The targets whose unloaded latency is measured again, in turns (direct first);
#: the peer too, so that its ratio to the gateway's comes from the same rounds.
LATENCY_IN_TURNS = (
    *("direct", "nginx", "aiohttp_min"),
    *("gw_bare", "gw_default", "gw_no_log"),
    "litellm",
)


def all_targets() -> list[Target]:
    """Every target, in the order they run."""
    passthrough = openai_requests("sk-bench-client")
    keyed = openai_requests(gateway_configs.CLIENT_KEY)

    def gateway(
        key: str,
        title: str,
        variant: str,
        requests: tuple[Request, Request] = passthrough,
        memory: bool = True,
    ) -> Target:
        return Target(key, title, "gateway", *requests, variant=variant, memory=memory)

    return [
        Target("direct", "direct (upstream)", "direct", *passthrough),
        Target("nginx", "nginx", "nginx", *passthrough),
        Target("aiohttp_min", "aiohttp pass-through (~40 lines)", "minimal", *passthrough),
        gateway("gw_bare", "gateway: bare (pipeline = [])", "bare"),
        gateway("gw_default", "gateway: default", "default"),
        gateway(
            "gw_default_chatgpt",
            "gateway: default, ChatGPT routes (+rewrite)",
            "default",
            requests=chatgpt_requests("sk-bench-client"),
            memory=False,
        ),
        gateway("gw_no_log", "gateway: default - access_log", "no_access_log"),
        gateway("gw_keys_mem", "gateway: keys + ratelimit (memory)", "keys_memory", requests=keyed),
        gateway("gw_keys_redis", "gateway: keys + ratelimit (redis)", "keys_redis", requests=keyed),
        *(
            Target(
                f"plugin_{name or 'none'}",
                f"bare + {name}" if name else "bare (the plugins' baseline)",
                "gateway",
                *passthrough,
                variant=f"only:{name}" if name else "bare",
                memory=False,
                throughput_only=True,
            )
            for name in ("", *gateway_configs.ABLATION)
        ),
        # The access log's cost, measured in turns too: one sequential pair is too noisy.
        Target(
            "turns_default",
            "default pipeline (in turns)",
            "gateway",
            *passthrough,
            variant="default",
            memory=False,
            throughput_only=True,
        ),
        Target(
            "turns_no_log",
            "default pipeline - access_log (in turns)",
            "gateway",
            *passthrough,
            variant="no_access_log",
            memory=False,
            throughput_only=True,
        ),
        # The usage ledger's cost on the default pipeline (issue 16: at most 5 %).
        Target(
            "turns_with_usage",
            "default pipeline + usage (in turns)",
            "gateway",
            *passthrough,
            variant="with_usage",
            memory=False,
            throughput_only=True,
        ),
        Target(
            "turns_no_metrics",
            "default pipeline - metrics (in turns)",
            "gateway",
            *passthrough,
            variant="no_metrics",
            memory=False,
            throughput_only=True,
        ),
        # The Redis store's cost over the in-process one, in the same rounds: the two
        # configs measured one after the other swung from 1.11x to 1.36x between runs.
        *(
            Target(
                f"turns_{variant}",
                f"keys + ratelimit ({store}, in turns)",
                "gateway",
                *keyed,
                variant=variant,
                memory=False,
                throughput_only=True,
            )
            for variant, store in (("keys_memory", "memory"), ("keys_redis", "redis"))
        ),
        # Scale-out: the same pipeline with two workers, unpinned (it shares both CPUs
        # with wrk and the upstream), against the one-worker row of the same rounds.
        Target(
            "turns_default_w2",
            "default pipeline, 2 workers (in turns)",
            "gateway",
            *passthrough,
            variant="default",
            memory=False,
            throughput_only=True,
            workers=2,
        ),
        Target(
            "litellm",
            "LiteLLM proxy (peer)",
            "litellm",
            *openai_requests(litellm.MASTER_KEY),
            startup_timeout=120.0,
            memory_counts=(2000,),
            open_timeout=30.0,
            reuse_for_memory=True,
            sse_streams=50,
        ),
    ]


@attrs.frozen
class Running:
    """A started target: where to send requests, and the process to watch."""

    base_url: str
    pid: int
    name: str  # the child's name in `Procs` ("" for direct: nothing was started)


class Launcher:
    """Starts each target (pinned to the proxy CPU) in front of the bench upstream."""

    def __init__(
        self,
        procs: Procs,
        workdir: Path,
        upstream_url: str,
        upstream_pid: int,
        nofile: int,
        redis_url: str = "",
        *,
        python: str,
    ) -> None:
        self.procs = procs
        self.workdir = workdir
        self.upstream_url = upstream_url
        self.upstream_pid = upstream_pid
        self.nofile = nofile
        self.redis_url = redis_url
        #: The interpreter of the gateway and of the aiohttp pass-through.
        self.python = python

    def start(self, target: Target) -> Running:
        """Start ``target`` and wait until it answers."""
        if target.kind == "direct":
            return Running(self.upstream_url, self.upstream_pid, "")
        port = free_port()
        if target.kind == "nginx":
            binary = nginx.find_nginx()
            if binary is None:
                raise RuntimeError("nginx is not installed")
            prefix = self.workdir / "nginx"
            upstream_port = int(self.upstream_url.rsplit(":", 1)[1])
            config = nginx.write_config(prefix, port, upstream_port, self.nofile)
            argv = nginx.nginx_argv(binary, prefix, config)
            env: dict[str, str] = {}
        elif target.kind == "minimal":
            argv = [self.python, "-m", "bench.minimal_proxy", "--port", str(port)]
            argv += ["--upstream", self.upstream_url]
            env = {}
        elif target.kind == "gateway":
            config_path = self.workdir / f"{target.variant}.toml"
            config_path.write_text(gateway_configs.gateway_config(target.variant, self.redis_url))
            argv = [self.python, "-m", "gateway", "run", "-c", str(config_path)]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            if target.workers > 1:
                argv += ["--workers", str(target.workers)]
            env = gateway_configs.gateway_env(self.upstream_url)
        elif target.kind == "litellm":
            binary_path = litellm.litellm_binary()
            if binary_path is None:
                raise RuntimeError(litellm.SKIPPED)
            config_path = litellm.write_config(self.workdir, self.upstream_url)
            argv = litellm.litellm_argv(binary_path, config_path, port)
            env = litellm.ENV
        else:
            raise ValueError(f"unknown target kind {target.kind!r}")
        # (The bench package is not installed: its own proxy starts from the checkout.)
        cwd = ROOT if target.kind == "minimal" else self.workdir
        cpu = PROXY_CPU if target.workers == 1 else None
        proc = self.procs.start(target.key, argv, cpu=cpu, env=env, cwd=cwd)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_http(base_url + "/", target.startup_timeout, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.procs.log_tail(target.key)
            self.procs.stop(target.key)
            raise RuntimeError(f"{target.title} did not start: {exc}\n{tail}") from exc
        return Running(base_url, proc.pid, target.key)

    def stop(self, running: Running) -> None:
        if running.name:
            self.procs.stop(running.name)


def start_upstream(procs: Procs) -> tuple[str, int]:
    """Start the bench upstream on the load CPU; return its URL and pid."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
    proc = procs.start("upstream", argv, cpu=LOAD_CPU, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_bench/stats", 20.0, alive=lambda: proc.poll() is None)
    return url, proc.pid


def start_redis(procs: Procs, workdir: Path, binary: str) -> str:
    """A private redis-server on a free port (load CPU, no persistence); its URL."""
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir)]
    proc = procs.start("redis", argv, cpu=LOAD_CPU, cwd=workdir)
    wait_tcp(port, 10.0, alive=lambda: proc.poll() is None)
    return f"redis://127.0.0.1:{port}/0"
