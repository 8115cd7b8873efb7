"""The ``gateway`` command, run as a real subprocess."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from importlib import metadata
from importlib.metadata import EntryPoint
from pathlib import Path

import aiohttp
import attrs
import pytest

from gateway.cli import build_parser, main
from gateway.config_types import Bytes, Seconds
from gateway.keys import key_digest
from gateway.plugin import Plugin
from gateway.plugin_listing import plugin_listing
from gateway.registry import GROUP, installed_plugins
from gateway.testing.chatgpt import TOTAL_CONVERSATIONS
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
    assert 'cooldown: default "30s"' in result.stdout


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


async def start_run(
    cwd: Path, env: dict[str, str] | None = None, *options: str
) -> tuple[asyncio.subprocess.Process, str]:
    """``gateway run`` on a free port of 127.0.0.1, once it serves: the process and its URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *GATEWAY,
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_serving(url + "/healthz", process)
    except BaseException:
        process.kill()
        await process.communicate()
        raise
    return process, url


async def stop_run(process: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """SIGTERM, then what the process wrote to stdout and stderr."""
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.communicate(), 20)


async def test_run_serves_with_no_config_file_and_stops_on_sigterm(tmp_path):
    process, _ = await start_run(tmp_path)
    out, err = await stop_run(process)
    assert process.returncode == 0, err
    assert b'"event": "gateway started"' in out
    assert b'"event": "gateway stopped"' in out


def author_folder(tmp_path: Path) -> Path:
    """A plugin author's folder: its own ``plugins`` package, which must never be imported."""
    own = tmp_path / "plugins"
    own.mkdir()
    for module in ("__init__", "auth", "metrics", "ratelimit"):
        (own / f"{module}.py").write_text("raise ImportError('the folder's own plugins')\n")
    return tmp_path


def test_check_loads_the_builtins_from_a_folder_with_its_own_plugins_package(tmp_path):
    result = run("check", cwd=author_folder(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "<default config.toml>: OK" in result.stdout
    assert "the folder's own plugins" not in result.stdout + result.stderr


async def test_workers_serve_from_a_folder_with_its_own_plugins_package(tmp_path):
    # Workers start as `python -m gateway` with the current folder first on sys.path.
    process, url = await start_run(author_folder(tmp_path), None, "--workers", "2")
    try:
        # Both workers up (one serving is enough for start_run), so both can take SIGTERM.
        started = await read_until(process, '"event": "gateway started"')
        if started.count('"event": "gateway started"') < 2:
            started += await read_until(process, '"event": "gateway started"')
        async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
            assert response.status == 200
            assert "gateway_requests_total" in await response.text()
    finally:
        out, err = await stop_run(process)
    assert process.returncode == 0, err
    assert started.count('"event": "gateway started"') == 2
    assert b"the folder's own plugins" not in out + err


async def read_until(process: asyncio.subprocess.Process, marker: str) -> str:
    """What the process printed up to and including the line with ``marker``."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or marker not in lines[-1]:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, f"the process ended before printing {marker!r}: {''.join(lines)}"
        lines.append(line.decode())
    return "".join(lines)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 20)


def printed_commands(text: str) -> list[str]:
    """The shell commands in ``text``: indented lines, continued lines joined."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [line.strip() for line in joined.splitlines() if line.startswith("  curl ")]


async def test_every_command_the_demo_prints_works_with_no_account():
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *GATEWAY, "demo", "--port", str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        commands = printed_commands(await read_until(process, "Press Ctrl-C"))
        assert len(commands) == 7, commands
        assert all(f"http://127.0.0.1:{port}/" in command for command in commands)
        shells = [
            await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                f"{command} --silent --show-error --fail --max-time 30",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for command in commands
        ]
        done = await asyncio.gather(*(shell.communicate() for shell in shells))
    finally:
        await stop(process)
    for command, shell, (_, err) in zip(commands, shells, done, strict=True):
        assert shell.returncode == 0, (command, err)
    conversation, conversations, imitate, openai_chat, login, health, metrics = (
        out.decode() for out, _ in done
    )
    assert "You said: Hello World" in conversation and conversation.rstrip().endswith("[DONE]")
    assert json.loads(conversations)["limit"] == 100
    assert '"object":"chat.completion.chunk"' in imitate and imitate.rstrip().endswith("[DONE]")
    assert "chat.completion.chunk" in openai_chat
    assert json.loads(login)["accessToken"]
    assert json.loads(health) == {"status": "ok"}
    assert "gateway_requests_total" in metrics


async def test_simulate_prints_what_points_a_gateway_at_it(tmp_path):
    simulator = await asyncio.create_subprocess_exec(
        *GATEWAY, "simulate", stdout=asyncio.subprocess.PIPE, cwd=tmp_path
    )
    gateway = None
    try:
        printed = await read_until(simulator, "Press Ctrl-C")
        exports = dict(
            shlex.split(line.strip())[1].split("=", 1)
            for line in printed.splitlines()
            if line.startswith("  export ")
        )
        assert set(exports) >= {"CHATGPT_BASE_URL", "CHATGPT_WEB_URL", "CHATGPT_AUTH0_URL"}
        gateway, base = await start_run(tmp_path, {**os.environ, **exports})
        async with aiohttp.ClientSession() as session:
            login = {"username": "demo@example.com", "password": "demo-password"}
            async with session.post(base + "/auth/login", json=login) as response:
                assert response.status == 200  # the web host and the Auth0 host both answered
            async with session.get(
                base + "/conversations", headers={"Authorization": "any"}
            ) as response:
                assert (await response.json())["total"] == TOTAL_CONVERSATIONS
    finally:
        if gateway is not None:
            await stop_run(gateway)
        await stop(simulator)


async def test_demo_runs_a_given_config_against_the_simulator(tmp_path):
    own = tmp_path / "own.toml"
    own.write_text(
        """
[upstreams.chatgpt]
url = "${CHATGPT_BASE_URL}"
[routes.listing]
methods = ["GET"]
path = "/mine"
upstream = "chatgpt"
upstream_path = "/conversations"
"""
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *GATEWAY, "demo", "-c", str(own), "--port", str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        printed = await read_until(process, "Press Ctrl-C")
        assert f"serving {own} on http://127.0.0.1:{port}" in printed
        assert "  listing: GET /mine" in printed
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/mine", headers={"Authorization": "Bearer x"}
            ) as answer,
        ):
            assert (await answer.json())["total"] == TOTAL_CONVERSATIONS
    finally:
        await stop(process)


# --- help, version, keygen, plugins: in process, the output is what counts ------------------


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"gateway": parser, **commands.choices}


def test_help_is_plain_text_and_every_option_says_what_it_does(capsys):
    for name, parser in subcommands().items():
        undocumented = [
            a.option_strings or a.dest
            for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction) and not a.help
        ]
        assert not undocumented, f"{name}: {undocumented}"
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text, text
    for command in subcommands()["gateway"]._actions[-1].choices:
        assert command in build_parser().format_help()


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"gateway {metadata.version('chatgpt-gateway')}"


def test_keygen_json_is_machine_readable(capsys):
    assert main(["keygen", "--name", "bob", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["name"] == "bob"
    assert made["sha256"] == key_digest(made["key"])
    assert made["config"] == f'keys.bob = {{ sha256 = "{made["sha256"]}" }}'


class Undocumented(Plugin):
    @attrs.frozen
    class Config:
        wait: Seconds = Seconds(5400.0)
        size: Bytes = Bytes(8 * 1024 * 1024)
        names: tuple[str, ...] = ("a",)
        strict: bool = True


def test_plugins_shows_durations_and_sizes_as_written_and_says_when_undocumented():
    entry = EntryPoint(name="undocumented", value=f"{__name__}:Undocumented", group=GROUP)
    installed = {**installed_plugins(), "undocumented": entry}
    text = plugin_listing(installed)
    block = text.split("undocumented  (", 1)[1].split("\n\n", 1)[0].splitlines()
    assert block[1:] == [
        "    (no description)",
        '    wait: default "90m"',
        '    size: default "8MiB"',
        '    names: default ["a"]',
        "    strict: default true",
    ]
    assert 'disable_for: default "1h"' in text
    assert 'cooldown: default "30s"' in text
    assert "``" not in text


def test_check_counts_one_route_in_the_singular(tmp_path):
    one = tmp_path / "one.toml"
    one.write_text('[routes.a]\npath = "/a"\n')
    result = run("check", "-c", str(one))
    assert result.returncode == 0, result.stderr
    assert f"{one}: OK, 1 route\n" in result.stdout
