"""The ``[plugins.routing]`` table: the model table, the strategy, fallbacks, outlier detection.

Shaped after LiteLLM's ``model_list`` and ``router_settings``: each public model
name (exact, or a wildcard such as ``gpt-4o*``) maps to deployments (an upstream
and the model name it expects), and may name fallback models tried when its own
deployments fail::

    [plugins.routing]
    routing_strategy = "weighted"       # weighted | least_in_flight
    max_attempts = 3

    [plugins.routing.upstreams.azure]
    kind = "azure"                      # openai (the default) | azure
    api_version = "2024-10-21"
    api_key = "${AZURE_API_KEY}"

    [plugins.routing.models."gpt-4o"]
    fallbacks = ["gpt-4o-mini"]
    [[plugins.routing.models."gpt-4o".deployments]]
    upstream = "openai"
    model = "gpt-4o-2024-08-06"
    weight = 3
    rpm = 600
    [[plugins.routing.models."gpt-4o".deployments]]
    upstream = "azure"
    model = "gpt4o-eastus"              # Azure: the deployment's name

    [plugins.routing.outlier_detection]
    consecutive_failures = 3
    base_ejection = "30s"
    max_ejection = "5m"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

import attrs

from gateway.api import PositiveInt, PositiveSeconds, Range, Seconds

__all__ = [
    "DeploymentConfig",
    "ModelConfig",
    "OutlierConfig",
    "RoutingConfig",
    "UpstreamKindConfig",
]

Strategy = Literal["weighted", "least_in_flight"]
UpstreamKind = Literal["openai", "azure"]

# A public name: what clients put in ``model``; ``*`` stands for any run of characters.
_PUBLIC_NAME = re.compile(r"[^\s\x00-\x1f]{1,256}")


@attrs.frozen
class DeploymentConfig:
    """``[[plugins.routing.models.<name>.deployments]]``: one place a model is served."""

    #: The upstream (a key of ``[upstreams]``) that serves it.
    upstream: str
    #: The model name that upstream expects (Azure: the deployment's name); leave it
    #: out to send the name the client asked for (useful under a wildcard).
    model: str | None = None
    #: Share of the traffic under ``weighted`` routing, relative to the other deployments.
    weight: Annotated[float, Range(0, above=True)] = 1.0
    #: Requests per minute this deployment may take (across the gateway, with Redis).
    rpm: PositiveInt | None = None
    #: Tokens (prompt plus completion) per minute this deployment may take.
    tpm: PositiveInt | None = None
    #: The credential sent to this deployment; overrides its upstream's ``api_key``.
    api_key: str | None = attrs.field(default=None, repr=False)
    #: The name in the ``x-gateway-deployment`` header, logs and metrics
    #: (default ``<upstream>/<model>``); deployments of one name share their health.
    name: str | None = None


@attrs.frozen
class ModelConfig:
    """``[plugins.routing.models.<public name>]``: a name clients use, and where it goes."""

    deployments: tuple[DeploymentConfig, ...] = ()
    #: Public models tried, in order, when every deployment of this one failed.
    fallbacks: tuple[str, ...] = ()


@attrs.frozen
class UpstreamKindConfig:
    """``[plugins.routing.upstreams.<name>]``: how to speak to one upstream."""

    #: ``openai``: ``/v1/...`` and ``Authorization: Bearer``, as OpenAI, vLLM, Ollama
    #: and most compatible services speak; ``azure``: Azure OpenAI's
    #: ``/openai/deployments/{deployment}/...?api-version=`` and ``api-key``.
    kind: UpstreamKind = "openai"
    #: Azure's ``api-version`` query parameter.
    api_version: str = "2024-10-21"
    #: The credential for every deployment on this upstream (unless one sets its own).
    #: Without one, the request keeps the ``Authorization`` the pipeline gave it.
    api_key: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class OutlierConfig:
    """``[plugins.routing.outlier_detection]``: passive health, as Envoy's outlier detection.

    A deployment that fails ``consecutive_failures`` times in a row is ejected
    (skipped by routing) for ``base_ejection`` times the number of times it has
    been ejected, at most ``max_ejection``; it then comes back on its own.
    """

    consecutive_failures: PositiveInt = 3
    base_ejection: PositiveSeconds = Seconds(30.0)
    max_ejection: PositiveSeconds = Seconds(300.0)


@attrs.frozen
class RoutingConfig:
    """``[plugins.routing]``: the model table and how requests are spread over it."""

    #: Public model names (exact, or with ``*`` wildcards), each a `ModelConfig`.
    models: Mapping[str, ModelConfig] = attrs.field(factory=dict)
    #: How each upstream is spoken to, by upstream name (default: OpenAI's way).
    upstreams: Mapping[str, UpstreamKindConfig] = attrs.field(factory=dict)
    #: ``weighted``: random, in proportion to the weights; ``least_in_flight``: the
    #: deployment with the fewest requests open in this process.
    routing_strategy: Strategy = "weighted"
    #: Upstream calls per request at most, fallbacks included.
    max_attempts: Annotated[int, Range(1, 8)] = 3
    outlier_detection: OutlierConfig = attrs.field(factory=OutlierConfig)
    #: Where rpm and tpm counters live: as ``[plugins.ratelimit]`` says it.
    store: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str = ""
    key_prefix: str = "gateway:routing:"

    def check(self) -> None:
        """Raise `ValueError` on a table that cannot route (key paths in the message)."""
        if self.outlier_detection.max_ejection < self.outlier_detection.base_ejection:
            raise ValueError("outlier_detection.max_ejection: must not be below base_ejection")
        for name, model in self.models.items():
            if not _PUBLIC_NAME.fullmatch(name):
                raise ValueError(f"models.{name}: not a model name")
            if not model.deployments and not model.fallbacks:
                raise ValueError(f"models.{name}: needs deployments or fallbacks")
            for fallback in model.fallbacks:
                if fallback not in self.models:
                    raise ValueError(f"models.{name}.fallbacks: unknown model {fallback!r}")
                if fallback == name:
                    raise ValueError(f"models.{name}.fallbacks: a model cannot fall back on itself")
        if self.store == "redis" and not self.redis_url:
            raise ValueError('store = "redis" needs redis_url')

    def upstream_names(self) -> set[str]:
        """Every upstream a deployment or an upstream table names."""
        names = set(self.upstreams)
        for model in self.models.values():
            names.update(d.upstream for d in model.deployments)
        return names
