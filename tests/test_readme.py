"""The README works as written: its setup commands, its CI, its config snippets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from gateway.runtime import load_runtime

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced blocks of ``language``, their list indentation removed."""
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^ *```", text, re.S | re.M)
    return [
        "\n".join(line.removeprefix(indent) for line in block.splitlines())
        for indent, block in blocks
    ]


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def test_setup_is_two_commands_and_ci_runs_the_test_one_in_a_fresh_venv():
    install, test = code_blocks(section("Set up"), "sh")
    assert install.strip() == "pip install . && gateway run"
    assert test.strip() == "pip install -e '.[test,redis,speed]' && pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if not line.lstrip().startswith("#")]
    venv = next(i for i, line in enumerate(commands) if " -m venv " in line)
    activate = next(i for i, line in enumerate(commands) if "/bin/activate" in line)
    readme_command = next(i for i, line in enumerate(commands) if line.startswith(test.strip()))
    assert venv < activate < readme_command


def test_the_test_extras_bring_the_build_backend():
    # Tests build wheels with --no-build-isolation: without the backend they fail.
    backend = {requirement_name(r) for r in PYPROJECT["build-system"]["requires"]}
    test_extras = {
        requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["test"]
    }
    assert backend <= test_extras


def test_every_config_in_the_readme_is_complete_or_quoted_from_a_file():
    examples = [
        (ROOT / "examples" / name).read_text()
        for name in ("teams.toml", "usage.toml", "routing.toml")
    ]
    blocks = code_blocks(README, "toml")
    assert len(blocks) >= 3
    for block in blocks:
        if any(block in example for example in examples):
            # Quoted: the files run as written (tests/test_*_example.py, and
            # tests/plugins/test_usage_browser.py for usage.toml).
            continue
        runtime = load_runtime(block, "README snippet", {})
        assert runtime.config.routes, block


def test_every_go_chatgpt_api_variable_in_the_readme_is_read():
    table = section("Coming from go-chatgpt-api").split("\n\n")[1]
    variables = set(re.findall(r"^\| (.*?) \|", table, re.M)) - {"go-chatgpt-api", "---"}
    names = {name for cell in variables for name in re.findall(r"`([A-Z_]+)`", cell)}
    config = (ROOT / "gateway" / "config.toml").read_text()
    read_by_config = set(re.findall(r"\$\{([A-Z_]+)", config))
    running = (ROOT / "gateway" / "running.py").read_text()
    assert "IMITATE_ACCESS_TOKEN" in names and "CONTINUE_SIGNAL" in names
    for name in names - {"GIN_MODE"}:  # accepted and ignored
        assert name in read_by_config or f'"{name}"' in running, name
