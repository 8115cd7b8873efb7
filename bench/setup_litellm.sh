#!/usr/bin/env bash
# Install the peer gateway the benchmark compares against: LiteLLM's proxy, in its own
# virtualenv (bench/.venv-litellm), so that its many dependencies never meet the gateway's.
# `python -m bench` uses it when present and says "skipped" when it is not.
set -euo pipefail
cd "$(dirname "$0")"
python="${PYTHON:-python3}"
venv=.venv-litellm
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q 'litellm[proxy]'
"$venv/bin/litellm" --version 2>/dev/null || "$venv/bin/python" -c "import litellm; print('litellm installed')"
