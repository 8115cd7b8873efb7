"""The ``gateway`` command, run as a real subprocess."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import aiohttp

from gateway.keys import key_digest
from tests.proxies import free_port

GATEWAY = [sys.executable, "-m", "gateway"]


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GATEWAY, *args], capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]


def test_check_default_config_lists_routes_and_pipelines(tmp_path):
    result = run("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "<default config.toml>: OK" in result.stdout
    assert (
        "conversations: GET /conversations -> chatgpt https://chatgpt.com/backend-api/conversations"
        in result.stdout
    )
    assert (
        "pipeline: access_log > metrics > cors > auth > ratelimit > upstream_proxy > rewrite"
        in result.stdout
    )


def test_check_bad_config_lists_every_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "x"\n[upstreams.u]\nurl = "htp:/x"\n')
    result = run("check", "-c", str(bad))
    assert result.returncode == 1
    assert f"{bad}: $.server.port: not a whole number" in result.stderr
    assert f'{bad}: $.upstreams.u.url: not a URL ("htp:/x")' in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_a_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('pipeline = ["nope"]\n')
    result = run("run", "-c", str(bad))
    assert result.returncode == 1
    assert "unknown plugin 'nope'" in result.stderr


def test_plugins_lists_builtins_with_their_options():
    result = run("plugins")
    assert result.returncode == 0
    for name in ("access_log", "auth", "cors", "rewrite", "upstream_proxy"):
        assert re.search(rf"^{name}  \(chatgpt-gateway ", result.stdout, re.M), name
    assert "cooldown: default 30.0" in result.stdout


def test_keygen_prints_a_key_and_its_hash_line():
    result = run("keygen", "--name", "alice")
    key = re.search(r"^\s+(gw-\S+)$", result.stdout, re.M).group(1)
    assert f'keys.alice = {{ sha256 = "{key_digest(key)}" }}' in result.stdout


async def wait_until_serving(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.returncode is not None:
                raise AssertionError("the gateway exited early")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not start")


async def test_run_serves_with_no_config_file_and_stops_on_sigterm(tmp_path):
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *GATEWAY,
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", process)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err
    assert b'"event": "gateway started"' in out
    assert b'"event": "gateway stopped"' in out


async def test_demo_streams_an_answer_with_no_account():
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *GATEWAY,
        "demo",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", process)
        body = {
            "action": "next",
            "messages": [
                {
                    "id": "m",
                    "author": {"role": "user"},
                    "content": {"content_type": "text", "parts": ["Hi"]},
                }
            ],
            "parent_message_id": "p",
            "model": "text-davinci-002-render-sha",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/conversation",
                json=body,
                headers={"Authorization": "demo-token"},
            ) as response,
        ):
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            text = (await response.read()).decode()
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert "You said: Hi" in text and text.rstrip().endswith("data: [DONE]")
    assert f"curl -N http://127.0.0.1:{port}/conversation" in out.decode()
