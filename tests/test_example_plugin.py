"""The example third-party plugin: a real ``pip install`` plus one config line runs it.

The package in ``examples/gateway-plugin-example`` is built and installed with
pip into a temporary directory, which is then put on ``sys.path``: the
gateway finds it through the ``gateway.plugins`` entry-point group exactly as
it would find any plugin installed into site-packages.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from yarl import URL

from gateway.config import RouteConfig, default_config_text
from gateway.errors import ConfigError
from gateway.plugin import Exchange
from gateway.registry import distribution_name, installed_plugins
from gateway.runtime import load_runtime

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gateway-plugin-example"
PACKAGE = "gateway_plugin_example"

ServeApp = Callable[[web.Application], Awaitable[str]]
StartGateway = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="module")
def example_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package built and installed by pip into a fresh directory (once)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-input",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        timeout=120,
    )
    assert (target / PACKAGE / "__init__.py").is_file()
    return target


@pytest.fixture
def example_installed(example_target: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The installed example made visible to this test only."""
    monkeypatch.syspath_prepend(str(example_target))
    importlib.invalidate_caches()
    yield example_target
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


async def echo_upstream(serve_app: ServeApp) -> tuple[str, list[dict[str, str]]]:
    """A real upstream that answers with the headers it received, and records them."""
    received: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        headers = dict(request.headers)
        received.append(headers)
        return web.json_response({"headers": headers})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return await serve_app(app), received


def gateway_config(upstream_url: str, pipeline: str) -> str:
    return f"""
pipeline = {pipeline}

[plugins.add_header]
name = "X-Example"
value = "added by the example"
response_name = "X-Example-Response"
response_value = "seen"

[upstreams.up]
url = "{upstream_url}"

[routes.everything]
path = "/{{rest*}}"
upstream = "up"
"""


def test_pip_install_registers_the_entry_point(example_installed: Path) -> None:
    entry_point = installed_plugins()["add_header"]

    assert entry_point.value == "gateway_plugin_example:AddHeader"
    assert distribution_name(entry_point) == "gateway-plugin-example 0.1.0"
    # It is the copy this test installed, not one from elsewhere.
    assert Path(str(entry_point.dist.locate_file(""))) == example_installed  # type: ignore[union-attr]
    # The built-ins come through the same group.
    assert "access_log" in installed_plugins()


async def test_one_config_line_makes_it_run(
    example_installed: Path, start_gateway: StartGateway, serve_app: ServeApp
) -> None:
    upstream_url, received = await echo_upstream(serve_app)
    gateway = await start_gateway(gateway_config(upstream_url, '["add_header"]'), {})

    async with gateway.request("GET", "/anything", headers={"X-Example": "forged"}) as response:
        assert response.status == 200
        assert response.headers["X-Example-Response"] == "seen"
        echoed = await response.json()

    assert len(received) == 1
    assert received[0]["X-Example"] == "added by the example"
    assert echoed["headers"]["X-Example"] == "added by the example"


async def test_installed_but_not_named_does_not_run(
    example_installed: Path, start_gateway: StartGateway, serve_app: ServeApp
) -> None:
    upstream_url, received = await echo_upstream(serve_app)
    # The plugin is installed and even configured, but no pipeline names it.
    assert "add_header" in installed_plugins()
    gateway = await start_gateway(gateway_config(upstream_url, "[]"), {})

    async with gateway.request("GET", "/anything") as response:
        assert response.status == 200
        assert "X-Example-Response" not in response.headers

    assert len(received) == 1
    assert "X-Example" not in received[0]


async def test_unknown_plugin_name_lists_the_installed_ones(
    example_installed: Path, start_gateway: StartGateway
) -> None:
    config = gateway_config("http://127.0.0.1:9", '["add_headr"]').replace(
        "[plugins.add_header]", "[plugins.add_headr]"
    )

    with pytest.raises(ConfigError) as caught:
        await start_gateway(config, {})

    unknown = [p for p in caught.value.problems if "unknown plugin 'add_headr'" in p]
    assert unknown, caught.value.problems
    assert unknown[0].startswith("$.pipeline[0]: ")
    assert "add_header" in unknown[0]
    assert "access_log" in unknown[0]


async def test_bad_config_is_a_config_error_with_its_key_path(
    example_installed: Path, start_gateway: StartGateway
) -> None:
    config = gateway_config("http://127.0.0.1:9", '["add_header"]')
    config = config.replace('response_value = "seen"\n', 'colour = "blue"\n')

    with pytest.raises(ConfigError) as caught:
        await start_gateway(config, {})

    problems = caught.value.problems
    assert any(p.startswith("$.plugins.add_header.colour: unknown key") for p in problems), problems


ROOT = EXAMPLE.parent.parent
PLUGIN_DOCS = [ROOT / "docs" / "plugins.md", EXAMPLE / "README.md"]


def toml_blocks(path: Path) -> list[str]:
    """The ```toml blocks of a markdown file, their indentation (in a list) removed."""
    blocks = re.findall(r"^( *)```toml\n(.*?)^ *```", path.read_text(), re.S | re.M)
    return [
        "\n".join(line.removeprefix(indent) for line in block.splitlines())
        for indent, block in blocks
    ]


def as_documented(block: str) -> str:
    """The config a snippet stands for: itself when it is a whole config (it has routes);
    else an edit of the shipped config: its pipeline line in place of the shipped one,
    its tables added."""
    if "routes" in tomllib.loads(block):
        return block
    default = default_config_text()
    line = re.search(r"^pipeline = .*$", block, re.M)
    assert line is not None
    merged = re.sub(r"^pipeline = .*$", lambda _: line.group(0), default, count=1, flags=re.M)
    return merged + "\n" + block.replace(line.group(0), "")


def test_every_config_snippet_of_the_plugin_docs_works_as_written(
    example_installed: Path,
) -> None:
    pyproject = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    default_pipeline = tomllib.loads(default_config_text())["pipeline"]
    checked = 0
    for path in PLUGIN_DOCS:
        for block in toml_blocks(path):
            data = tomllib.loads(block)
            if "project" in data:  # quoted from the example's pyproject.toml
                entry_points = data["project"].get("entry-points", {})
                for group, names in entry_points.items():
                    assert pyproject["project"]["entry-points"][group] == names
                continue
            config = as_documented(block)
            runtime = load_runtime(config, f"{path.name} snippet", {})
            if config != block:
                # Adding a plugin is appending its name: the others stay.
                assert data["pipeline"] == [*default_pipeline, "add_header"], block
                assert all(
                    "add_header" in [p.name for p in pipeline.plugins]
                    for pipeline in runtime.pipelines.values()
                    if pipeline.plugins
                )
            checked += 1
    assert checked >= 3


def exchange(headers: dict[str, str] | None = None) -> Exchange:
    """A bare `Exchange` for testing a plugin as a plain object, no server needed."""
    request = make_mocked_request("GET", "/v1/models", headers=headers or {})
    return Exchange(
        request=request,
        route_name="test",
        route=RouteConfig(path="/v1/{rest*}", upstream="up"),
        upstream=None,
        path_params={"rest": "models"},
        path="/v1/models",
        upstream_url=URL("http://upstream.invalid/v1/models"),
        upstream_headers=CIMultiDict(headers or {}),
        client_ip="127.0.0.1",
        request_id="test",
    )


async def test_the_plugin_as_a_plain_object(example_installed: Path) -> None:
    from gateway_plugin_example import AddHeader

    plugin = AddHeader(AddHeader.Config(name="X-Team", value="research"))
    ex = exchange({"X-Team": "forged"})

    assert await plugin.on_request(ex) is None
    assert ex.upstream_headers.getall("X-Team") == ["research"]

    ex.response_headers = CIMultiDict()
    await plugin.on_response(ex)
    assert dict(ex.response_headers) == {}  # no response header unless configured

    with pytest.raises(ValueError, match="response_value"):
        AddHeader(AddHeader.Config(name="X-Team", value="research", response_name="X-Only"))
