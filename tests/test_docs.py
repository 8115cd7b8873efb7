"""``docs/plugins.md`` documents every plugin hook (datasette's ``test_docs.py`` idea).

A hook added to `gateway.plugin.Plugin` without a ``### `name` `` section holding
its signature in a Python code block fails here, as does a new public method of
`Plugin` or member of `Exchange` that the guide does not mention.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from gateway import api
from gateway.plugin import HOOKS, Exchange, Plugin

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*")
FENCE = re.compile(r"```(\w*)")


def public_members(cls: type) -> list[str]:
    """The public methods and properties a class defines itself."""
    return [
        name
        for name, value in vars(cls).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or isinstance(value, property | classmethod))
    ]


def plugin_hooks() -> list[str]:
    """`HOOKS`, the lifecycle hooks, and any other coroutine method `Plugin` defines.

    Every hook is awaited by the gateway, so a new ``async def`` on `Plugin` is a
    new hook; its synchronous helpers (``uses``, ``overrides``) are not.
    """
    coroutines = [
        name
        for name, value in vars(Plugin).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    ]
    return list(dict.fromkeys([*HOOKS, "startup", "shutdown", *coroutines]))


def parse_guide(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """Map each heading's title to the code blocks of its section; list every python block.

    A section runs to the next heading of the same or a higher level; ``#`` lines
    inside fenced code are not headings.
    """
    sections: dict[str, list[str]] = {}
    open_sections: list[tuple[int, str]] = []
    python_blocks: list[str] = []
    fence: str | None = None
    block: list[str] = []
    for line in text.splitlines():
        opening = FENCE.match(line)
        if fence is None and opening:
            fence, block = opening.group(1), []
            continue
        if fence is not None:
            if line.startswith("```"):
                code = "\n".join(block)
                if fence == "python":
                    python_blocks.append(code)
                    for _, title in open_sections:
                        sections[title].append(code)
                fence = None
            else:
                block.append(line)
            continue
        heading = HEADING.fullmatch(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2)
            open_sections = [(lv, t) for lv, t in open_sections if lv < level]
            open_sections.append((level, title))
            sections.setdefault(title, [])
    return sections, python_blocks


@pytest.fixture(scope="module")
def guide() -> tuple[dict[str, list[str]], list[str]]:
    return parse_guide(GUIDE.read_text(encoding="utf-8"))


def test_the_hook_list_is_complete() -> None:
    hooks = plugin_hooks()
    assert set(HOOKS) <= set(hooks)
    assert {"startup", "shutdown"} <= set(hooks)
    assert "overrides" not in hooks  # a helper, not a hook
    assert set(hooks) <= set(public_members(Plugin))


@pytest.mark.parametrize("hook", plugin_hooks())
def test_every_hook_has_a_section_with_its_signature(
    hook: str, guide: tuple[dict[str, list[str]], list[str]]
) -> None:
    sections, _ = guide
    title = f"`{hook}`"
    assert title in sections, f'docs/plugins.md has no "### `{hook}`" section'
    assert any(f"def {hook}(" in code for code in sections[title]), (
        f"the `{hook}` section of docs/plugins.md has no ```python block with `def {hook}(`"
    )


def test_hook_sections_are_level_three_headings() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for hook in plugin_hooks():
        assert re.search(rf"^### `{hook}`$", text, re.MULTILINE), hook


def mentioned(name: str, text: str) -> bool:
    """Whether ``name`` appears in code, as `` `name`` or as an attribute (``ex.name``)."""
    return re.search(rf"[`.]{re.escape(name)}\b", text) is not None


def test_every_plugin_method_is_documented() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    missing = [
        name for name in [*public_members(Plugin), "Config", "name"] if not mentioned(name, text)
    ]
    assert not missing, f"Plugin members not in docs/plugins.md: {missing}"


def test_every_exchange_field_is_documented() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    public_fields = [f.name for f in attrs.fields(Exchange) if not f.name.startswith("_")]
    members = public_fields + public_members(Exchange)
    missing = [name for name in members if not mentioned(name, text)]
    assert not missing, f"Exchange members not in docs/plugins.md: {missing}"


def test_python_examples_are_valid_python(guide: tuple[dict[str, list[str]], list[str]]) -> None:
    _, blocks = guide
    assert len(blocks) > 10
    for code in blocks:
        try:
            ast.parse(code)
        except SyntaxError as exc:
            pytest.fail(f"a python block in docs/plugins.md does not parse: {exc}\n{code}")


def test_parse_guide_ignores_comments_in_code_and_ends_sections() -> None:
    text = "\n".join(
        [
            "### `on_request`",
            "```python",
            "# not a heading",
            "async def on_request(self, ex): ...",
            "```",
            "### `on_response`",
            "```toml",
            "def on_response(",
            "```",
            "## Testing",
            "```python",
            "def on_response(self, ex): ...",
            "```",
        ]
    )
    sections, blocks = parse_guide(text)

    assert sections["`on_request`"] == ["# not a heading\nasync def on_request(self, ex): ..."]
    assert sections["`on_response`"] == []  # toml does not count; "## Testing" ended it
    assert len(blocks) == 2


def test_the_worked_example_is_the_example_package() -> None:
    package = GUIDE.parent.parent / "examples/gateway-plugin-example/gateway_plugin_example"
    source = (package / "__init__.py").read_text(encoding="utf-8")
    [plugin_class] = [node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)]
    class_source = ast.get_source_segment(source, plugin_class)

    assert class_source is not None
    assert class_source in GUIDE.read_text(encoding="utf-8")


EXAMPLE_TEST = GUIDE.parent.parent / "examples/gateway-plugin-example/tests/test_add_header.py"


def test_the_guide_shows_the_example_test_complete() -> None:
    _, blocks = parse_guide(GUIDE.read_text(encoding="utf-8"))
    assert EXAMPLE_TEST.read_text(encoding="utf-8").rstrip("\n") in blocks


def test_the_example_test_runs_with_only_the_test_kit(tmp_path: Path) -> None:
    """The guide's test, copied into a folder of its own (no conftest, the example's pytest
    settings) and run by pytest in a subprocess: the kit's fixtures come from the entry point."""
    example = EXAMPLE_TEST.parent.parent
    (tmp_path / "pyproject.toml").write_text((example / "pyproject.toml").read_text())
    (tmp_path / "test_add_header.py").write_text(EXAMPLE_TEST.read_text())
    env = {**os.environ, "PYTHONPATH": str(example)}  # the example package, not installed
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_stable_surface_is_documented_with_its_version() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    missing = [name for name in api.__all__ if not mentioned(name, text)]
    assert not missing, f"gateway.api names not in docs/plugins.md: {missing}"
    assert f'`"{api.API_VERSION}"`' in text
