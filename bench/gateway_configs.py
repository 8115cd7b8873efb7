"""The gateway configs under test, each derived from the shipped ``config.toml``.

The shipped config is read at run time (so the bench follows it as it
changes), changed as a dict, and written back as TOML.  Each variant is the
default config with one change, so that the rows differ in what their names say:

- ``bare``: ``pipeline = []`` (the ``/v1`` route has no plugins of its own).
- ``default``: the shipped config as it is (ChatGPT's routes add ``rewrite``).
- ``no_access_log``: the default pipeline without ``access_log``.
- ``no_metrics``: the default pipeline without ``metrics``.
- ``with_usage``: the default pipeline with ``usage`` after ``access_log``, its ledger a
  SQLite file in the temporary folder (`USAGE`).
- ``keys_memory``: ``auth`` in keys mode (a client key, a pooled upstream
  credential) and a ``ratelimit`` rule (after ``auth`` if the shipped pipeline
  lacks it), on the in-process store.
- ``keys_redis``: the same limits on Redis.
- ``only:NAME``: the bare config plus one plugin in the global pipeline
  (``rewrite`` aliasing the model, ``ratelimit`` with the rule below, ``routing``
  sending the model to one deployment, the rest as shipped).

Routes that ``skip`` or configure a plugin the variant no longer runs lose
that skip or table (the config would be invalid otherwise).  Every upstream gets
``max_connections = 20000``: the shipped 10,000 would queue the 10,001st open
stream until another ends, and the memory probe holds 10,000 open at once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The client key of the keys-mode configs (a bench fixture, not a secret).
CLIENT_KEY = "gw-bench-client-key-0123456789abcdef"
CLIENT_KEY_SHA256 = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
MAX_CONNECTIONS = 20000
#: Plugins measured one at a time on the bare config: throughput with each on and off.
ABLATION = (
    *("access_log", "metrics", "cors", "auth", "upstream_proxy", "rewrite", "ratelimit"),
    "usage",
    "routing",
)

KEYS_AUTH: dict[str, Any] = {
    "mode": "keys",
    "keys": {"bench": {"sha256": CLIENT_KEY_SHA256}},
    "credentials": {
        "openai": [{"name": "bench-openai", "token": "sk-bench-upstream"}],
        "chatgpt": [{"name": "bench-chatgpt", "token": "bench-upstream-token"}],
    },
}
#: The usage ledger's table: a SQLite file of the bench's own, rows kept for a day.
USAGE: dict[str, Any] = {
    "store": str(Path(tempfile.gettempdir()) / "gateway-bench-usage.sqlite3"),
    "retention_days": 1,
}
RATE_RULE = {"name": "bench-rate", "key": "identity", "rate": "100000/s", "burst": 1000}
#: The config each plugin gets when it runs alone (merged over the shipped table).
ALONE: dict[str, dict[str, Any]] = {
    "ratelimit": {"store": "memory", "rules": [RATE_RULE]},
    "rewrite": {"model_aliases": {"gpt-3.5-turbo": "gpt-3.5-turbo-0125"}},
    "usage": USAGE,
    # The bench's models (wrk's, instructions.sh's), each on one deployment of the
    # upstream the route already has, under another name (the body is written again).
    "routing": {
        "models": {
            "gpt-3.5-turbo": {
                "deployments": [{"upstream": "openai", "model": "gpt-3.5-turbo-0125"}]
            },
            "gpt-4o-mini": {
                "deployments": [{"upstream": "openai", "model": "gpt-4o-mini-2024-07-18"}]
            },
        }
    },
}


def shipped_config() -> dict[str, Any]:
    """The default config (``gateway/config.toml``, shipped in the package), parsed."""
    return tomllib.loads((REPO / "gateway" / "config.toml").read_text())


def shipped_pipeline() -> tuple[str, ...]:
    """The shipped global pipeline, for the report."""
    return tuple(shipped_config().get("pipeline", ()))


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(config: dict[str, Any]) -> str:
    """``config`` as TOML: top-level values first, then one table per top-level table."""
    lines = [
        f"{json.dumps(k)} = {toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)
    ]
    for name, table in config.items():
        if isinstance(table, dict):
            lines.append(f"\n[{json.dumps(name)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def with_pipeline(config: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``config`` with another global pipeline; skips of absent plugins are dropped."""
    config["pipeline"] = list(names)
    for route in config.get("routes", {}).values():
        if "skip" in route:
            route["skip"] = [n for n in route["skip"] if n in names]
        runs = {*names, *route.get("pipeline", ())} - set(route.get("skip", ()))
        tables = route.get("plugins", {})
        for name in [n for n in tables if n not in runs]:
            del tables[name]
    return config


def gateway_config(variant: str, redis_url: str = "") -> str:
    """The config text of one variant (see the module docstring)."""
    config = copy.deepcopy(shipped_config())
    for upstream in config.get("upstreams", {}).values():
        upstream["max_connections"] = MAX_CONNECTIONS
    plugins = config.setdefault("plugins", {})
    pipeline = list(config.get("pipeline", ()))
    if variant == "default":
        return to_toml(config)
    if variant == "bare":
        return to_toml(with_pipeline(config, []))
    if variant == "no_access_log":
        return to_toml(with_pipeline(config, [n for n in pipeline if n != "access_log"]))
    if variant == "no_metrics":
        return to_toml(with_pipeline(config, [n for n in pipeline if n != "metrics"]))
    if variant == "with_usage":
        plugins["usage"] = dict(USAGE)
        at = pipeline.index("access_log") + 1 if "access_log" in pipeline else 0
        pipeline[at:at] = ["usage"]
        return to_toml(with_pipeline(config, pipeline))
    if variant in ("keys_memory", "keys_redis"):
        plugins["auth"] = copy.deepcopy(KEYS_AUTH)
        store = {"store": "memory"} if variant == "keys_memory" else {"store": "redis"}
        limits = {**store, "redis_url": redis_url, "rules": [RATE_RULE]}
        plugins["ratelimit"] = {**plugins.get("ratelimit", {}), **limits}
        if "ratelimit" not in pipeline:
            at = pipeline.index("auth") + 1 if "auth" in pipeline else len(pipeline)
            pipeline[at:at] = ["ratelimit"]
        return to_toml(with_pipeline(config, pipeline))
    if variant.startswith("only:"):
        plugin = variant.removeprefix("only:")
        plugins[plugin] = {**plugins.get(plugin, {}), **ALONE.get(plugin, {})}
        return to_toml(with_pipeline(config, [plugin]))
    raise ValueError(f"unknown gateway variant {variant!r}")


def gateway_env(upstream_url: str) -> dict[str, str]:
    """The environment that points the default config's upstreams at the bench upstream."""
    return {
        "CHATGPT_BASE_URL": upstream_url,
        "OPENAI_BASE_URL": upstream_url,
        "GO_CHATGPT_API_PROXY": "",
        "PROXY": "",
        "GATEWAY_PROXY": "",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
    }
