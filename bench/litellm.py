"""LiteLLM's proxy, the peer Python gateway: where it is installed and how it is run.

``bench/setup_litellm.sh`` installs it into ``bench/.venv-litellm`` (its own
virtualenv: its dependencies never meet the gateway's).  It is configured with
one model, ``gpt-3.5-turbo``, served by the bench upstream as an
OpenAI-compatible provider; a master key (it refuses to start without one) but
no database and no callbacks, so that it does the least it can: check the key,
parse the request, call the provider, answer.
"""

from __future__ import annotations

from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-litellm"
MODEL = "gpt-3.5-turbo"
SKIPPED = "skipped: LiteLLM not installed (run bench/setup_litellm.sh)"
#: LiteLLM refuses to start without a master key; clients send it as their bearer token.
MASTER_KEY = "sk-bench-litellm-master-key"

CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream_url}/v1
      api_key: sk-bench-upstream
litellm_settings:
  telemetry: false
  drop_params: true
  set_verbose: false
  request_timeout: 600
general_settings:
  master_key: {master_key}
  disable_spend_logs: true
"""

#: Keep it offline and quiet: no model-cost download, no telemetry, no debug logs.
ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
    "DISABLE_ADMIN_UI": "True",
}


def litellm_binary() -> Path | None:
    """The ``litellm`` command of the bench virtualenv, or ``None`` when not installed."""
    binary = VENV / "bin" / "litellm"
    return binary if binary.exists() else None


def version() -> str:
    """The installed LiteLLM version, read from its distribution metadata."""
    for meta in (VENV / "lib").glob("python*/site-packages/litellm-*.dist-info/METADATA"):
        for line in meta.read_text().splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def write_config(directory: Path, upstream_url: str) -> Path:
    """Write LiteLLM's ``config.yaml`` for the bench upstream; return its path."""
    path = directory / "litellm.yaml"
    path.write_text(CONFIG.format(model=MODEL, upstream_url=upstream_url, master_key=MASTER_KEY))
    return path


def litellm_argv(binary: Path, config: Path, port: int) -> list[str]:
    """One uvicorn worker on ``127.0.0.1:port``, as the gateway runs one process."""
    return [
        str(binary),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
