"""What can be checked of the Docker image and compose file without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml

from gateway.units import parse_duration

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "gateway" / "config.toml"
DOCKERFILE = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")  # join continued lines
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONFIG_VARIABLES = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", SHIPPED_CONFIG.read_text()))
# Accepted and ignored, so that go-chatgpt-api's compose files work unchanged.
IGNORED_VARIABLES = {"GIN_MODE"}


def instructions(name: str) -> list[str]:
    return [
        line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")
    ]


def test_multi_stage_on_a_slim_python_base():
    bases = instructions("FROM")
    assert len(bases) >= 2
    assert all(re.match(r"python:3\.1[1-9]-slim", base) for base in bases)


def test_runs_as_a_non_root_user():
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")


def test_port_and_healthcheck():
    assert instructions("EXPOSE") == ["8080"]
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck


def test_the_command_is_an_installed_console_script():
    (entrypoint,) = instructions("ENTRYPOINT")
    (command,) = instructions("CMD")
    script = yaml.safe_load(entrypoint)[0]
    assert script in PYPROJECT["project"]["scripts"]
    assert shutil.which(script) is not None
    help_text = subprocess.run(
        [script, *yaml.safe_load(command), "--help"], capture_output=True, text=True, timeout=30
    )
    assert help_text.returncode == 0 and "--workers" in help_text.stdout


def test_the_wheel_embeds_the_default_config(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("gateway/config.toml") == SHIPPED_CONFIG.read_bytes()
        assert "gateway_plugins/auth/plugin.py" in archive.namelist()
        assert not any(name.startswith("plugins/") for name in archive.namelist())


def test_compose_mirrors_the_seed():
    service = COMPOSE["services"]["chatgpt-gateway"]
    assert service["restart"] == "unless-stopped"
    assert "8080:8080" in service["ports"]
    names = {entry.split("=", 1)[0] for entry in service["environment"]}
    assert "GO_CHATGPT_API_PROXY" in names and "GIN_MODE" in names
    assert names - IGNORED_VARIABLES <= CONFIG_VARIABLES, names - CONFIG_VARIABLES
    assert COMPOSE["services"]["redis"]["profiles"] == ["redis"]


def test_commented_compose_variables_are_read_by_the_config_too():
    commented = re.findall(r"#\s*-\s*([A-Z_]+)=", (ROOT / "docker-compose.yml").read_text())
    assert commented and set(commented) <= CONFIG_VARIABLES


def test_docker_waits_longer_than_the_drain_before_killing():
    # Docker's default is 10 s, then SIGKILL: streams would be cut mid-drain.
    service = COMPOSE["services"]["chatgpt-gateway"]
    drain_timeout = tomllib.loads(SHIPPED_CONFIG.read_text())["server"]["drain_timeout"]
    assert parse_duration(service["stop_grace_period"]) > parse_duration(drain_timeout)


def test_the_redis_command_wires_redis_url_to_the_redis_service():
    command = re.search(
        r"REDIS_URL=redis://(\w[\w-]*):(\d+)\S* docker compose --profile (\w+) up", COMPOSE_TEXT
    )
    assert command is not None
    host, port, profile = command.groups()
    assert COMPOSE["services"][host]["profiles"] == [profile]
    assert port == "6379"
    environment = COMPOSE["services"]["chatgpt-gateway"]["environment"]
    assert "REDIS_URL=${REDIS_URL:-}" in environment  # passed on, not commented out
    assert command.group(0) in (ROOT / "README.md").read_text()


def test_the_config_mount_example_lands_where_the_gateway_reads_it():
    mount = re.search(r"#\s*- \./config\.toml:(\S+?)(:ro)?$", COMPOSE_TEXT, re.M)
    assert mount is not None
    (workdir,) = [w for w in instructions("WORKDIR") if w.startswith("/home/")]
    assert mount.group(1) == f"{workdir}/config.toml"
