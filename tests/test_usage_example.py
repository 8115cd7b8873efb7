"""The README's "Usage and the admin page" quotes examples/usage.toml, which the browser test
runs as written (tests/plugins/test_usage_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.keys import key_digest, new_key
from gateway.runtime import load_runtime

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "usage.toml"


def test_the_readme_quotes_the_usage_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Usage and the admin page", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert block.strip() in EXAMPLE.read_text()
    assert "[plugins.usage.admin]" in block and "[routes.admin]" in block
    assert "docs/admin.png" in section and (ROOT / "docs" / "admin.png").stat().st_size > 10_000


def test_the_usage_file_is_a_valid_config() -> None:
    env = {
        "ALICE_KEY_SHA256": key_digest(new_key()[0]),
        "BOB_KEY_SHA256": key_digest(new_key()[0]),
        "ADMIN_KEY_SHA256": key_digest(new_key()[0]),
        "CHATGPT_ACCESS_TOKEN_1": "t1",
        "OPENAI_API_KEY": "k1",
        "OPENAI_API_KEY_SPARE": "k2",
    }
    runtime = load_runtime(EXAMPLE.read_text(), "usage.toml", env)
    assert "usage" in [p.name for p in runtime.pipelines["openai"].plugins]
    assert runtime.pipelines["admin"].plugins[0].name in ("access_log", "usage")
